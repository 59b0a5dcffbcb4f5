"""tinyvr.rl: the pure functions of the GRPO recipe.

- ``rewards``: TRL-signature reward functions and their registry (no torch import);
- ``advantages``: group-relative advantage estimators (tensor functions, registered by name);
- ``loss``: fp32 per-token log-probs, completion masks, KL estimators, policy loss, aggregation.

Submodules are imported explicitly (``from tinyvr.rl.rewards import ...``) so that importing
the rewards does not pull in torch.
"""
