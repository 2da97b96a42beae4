"""Generation backends behind one interface: token-id prompts in, sampled ids and their sampling log-probs out.

- :class:`HFBackend`: our own batched KV-cache sampling loop over a ``transformers`` model (CPU or GPU).
- :class:`VLLMBackend`: colocated vLLM engine (gpu extra, imported lazily) with weight sync and sleep mode.
- :class:`VLLMServerBackend`: client of an OpenAI-compatible vLLM server (evaluation / frozen policy).
"""

from rlcore.generation.hf_backend import HFBackend
from rlcore.generation.sampling import StopStringMatcher, draw_tokens, sampling_logprobs
from rlcore.generation.types import FINISH_LENGTH, FINISH_STOP, Generation, GenerationBackend, SamplingParams
from rlcore.generation.vllm_backend import VLLMBackend, VLLMServerBackend

__all__ = [
    "FINISH_LENGTH",
    "FINISH_STOP",
    "Generation",
    "GenerationBackend",
    "HFBackend",
    "SamplingParams",
    "StopStringMatcher",
    "VLLMBackend",
    "VLLMServerBackend",
    "draw_tokens",
    "sampling_logprobs",
]
