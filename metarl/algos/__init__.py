"""Meta-learners and the pieces they share (returns, adaptation, TRPO)."""
