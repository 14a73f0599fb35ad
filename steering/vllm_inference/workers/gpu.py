from vllm.v1.worker.gpu_worker import Worker

from steering.vllm_inference.model_runner import SteeringWorkerMixin


class SteeringGPUWorker(SteeringWorkerMixin, Worker):
    """vLLM's CUDA (and ROCm) worker with the steering hook (`SteeringWorkerMixin`)."""
