from vllm.v1.worker.cpu_worker import CPUWorker

from steering.vllm_inference.model_runner import SteeringWorkerMixin


class SteeringCPUWorker(SteeringWorkerMixin, CPUWorker):
    """vLLM's CPU worker with the steering hook (`SteeringWorkerMixin`)."""
