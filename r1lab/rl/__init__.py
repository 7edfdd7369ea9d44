"""Reinforcement learning: the GRPO/PPO math (``grpo``, pure tensors), the PPO critic (``value``),
the step's settings (``settings``), and one RL step (``step``: rollout -> reward -> advantage ->
update), which every training command calls."""
