"""Recipes: one readable script per stage, composing the components."""

from __future__ import annotations


def run_stage(cfg, resume: bool = False):
    """Run the stage named by `cfg.stage`; returns the final model folder."""
    if cfg.stage == "grpo":
        from tinyvr.recipes.grpo import train
    else:  # pretrain, sft and coldstart share the supervised loop
        from tinyvr.recipes.sft import train
    return train(cfg, resume=resume)
