"""A process reward model made for the draft (`rsdchat train-prm`, the `draft-prm` reward).

- `labels`: the draft's own steps on questions with gold answers, labelled by what the target
  can still do after them (Math-Shepherd-style estimation, resumable);
- `head`: the reward head, in the exact Qwen2.5-Math-PRM form (`score` = Linear·ReLU·Linear to
  two classes, read at the `<extra_0>` step tag), and its file;
- `train`: fitting it to the draft's hidden states (held-out folds by question, calibration);
- `checkpoint`: a `Qwen2ForProcessRewardModel` checkpoint (the draft's backbone and the head)
  that vLLM serves on its pooling API;
- `safetensors`: the file format, read and written with numpy alone.

Everything here needs numpy (`pip install 'rsdchat[train]'`; the llamacpp backend has it).
"""
