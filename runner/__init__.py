"""The machinery main.py drives: settings, state, checkpoints, logs, training and acting for a group of seeds."""
