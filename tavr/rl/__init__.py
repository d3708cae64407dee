"""Reinforcement-learning fine-tuning: rewards on generated talking-head videos."""
