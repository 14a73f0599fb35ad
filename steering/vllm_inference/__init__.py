"""SteerLab on vLLM (STEERLAB_ENGINE=vllm): per-request steering inside vLLM's batches; the
peer of `steering.inference` for the vLLM engine, behind the same scheduler interface.

- `steering_table`: the steering table, the token → row index and the `steerlab::add_rows` op, the prefix-cache salt of a steering
  (torch only);
- `model_runner`: attaching them to vLLM's V1 model runner, on every rank, through
  `workers` (vLLM's CPU and CUDA worker classes with the hook);
- `engine`: `VllmScheduler`, built on `steering.inference.admission.Admission` over vLLM's engine;
- `weights`: the site model's weights in a form vLLM loads.

No Django here (`steering.serving.engines` builds the scheduler from the settings); nothing
imports vLLM until a scheduler is built, so the main virtualenv (without vLLM) can import this
package. See docs/vllm.md.
"""
