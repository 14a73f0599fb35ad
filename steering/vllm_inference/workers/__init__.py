"""vLLM's worker classes with SteerLab's steering hook, one module per platform: importing
vLLM's CPU worker patches torch's CUDA API for the CPU, so a CUDA process must never import it."""
