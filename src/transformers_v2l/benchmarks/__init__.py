"""Speed-and-scale benchmarks of Video2LoRA (`v2l bench ...`) and the paper's adapter diagnostics.

Modules: `ttft` (query time to first token), `amortized` (TTFT over N questions),
`internalization` (internalization against one prefill, stage by stage), `token_load` (answer-time
tokens and peak memory), `sweep` (frames x resolution), `batched` (per-row adapters in one batch),
`long_video` (chunked internalization of a whole film), `diagnostics` (appendices C and D), `models`
(real-shape random models and inputs) and `common` (interleaved timing, memory caps, result files). Heavy imports happen inside the functions.
"""
