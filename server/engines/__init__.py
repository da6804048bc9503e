"""Engine implementations. Only modules in this package import vllm."""
