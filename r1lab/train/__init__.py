"""Training pieces shared by every command: rollouts packed into tensors (``batch``), log-probs
from logits (``logprobs``), the shared-prompt forward (``fasttrain``), atomic checkpoints
(``checkpoint``), learning-rate schedules (``schedule``) and the run's metric loggers (``tracking``)."""
