"""tinyvr.data: videos -> frames -> tensors, text templates, tokenizers and dataset files.

Modules: `video` (PyAV reader, frame sampling), `processor` (the object users call), `template`
(qwen2_base prompts), `tokenizer` (embedded BPE, loading), `datasets` (reference file formats).
Kept import-free here: `tinyvr.data.video` must not pull in torch or transformers.
"""
