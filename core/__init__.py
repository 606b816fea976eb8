"""The maths the agents are built from (flow and SDE core, networks, critic, distributions, train state) and the
error type of a fault a user can fix. Imports nothing of the project."""
