"""When a run logs, evaluates, saves and rotates its offline shard: the one place these rules live.

Steps count updates offline and environment steps online (`step` = steps completed so far); events
fall on multiples of their interval (an interval of 0: never), plus the fixed points of the protocol.
"""

import dataclasses


def is_due(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


@dataclasses.dataclass(frozen=True)
class Schedule:
    offline_steps: int
    online_steps: int
    log_interval: int
    eval_interval: int
    save_interval: int
    shard_interval: int = 0  # steps between offline shard rotations (0: one dataset, no rotation)
    steps_per_call: int = 1  # offline updates per jitted call at most

    @property
    def total_steps(self) -> int:
        return self.offline_steps + self.online_steps

    def next_offline_stop(self, step: int) -> int:
        """The step the next offline call ends at: `steps_per_call` later, or the next event, whichever is
        first, so every event lands exactly on its step. A shard rotates before every update that is a
        multiple of its interval (envs/offline_data.py), so a call ends just before it."""
        intervals = (self.log_interval, self.eval_interval, self.save_interval)
        stops = [self.offline_steps, step + self.steps_per_call]
        stops += [(step // interval + 1) * interval for interval in intervals if interval > 0]
        if self.shard_interval > 0:
            stops.append(((step + 1) // self.shard_interval + 1) * self.shard_interval - 1)
        return min(stops)

    def next_event(self, step: int) -> int:
        """The first step after `step` that logs, evaluates or saves (or the run's last): between two such
        steps the online loop only acts and updates."""
        intervals = (self.log_interval, self.eval_interval, self.save_interval)
        events = [self.total_steps] + [(step // interval + 1) * interval for interval in intervals if interval > 0]
        events += [end for end in (self.offline_steps,) if end > step]
        return min(events)

    def logs(self, step: int) -> bool:
        return is_due(step, self.log_interval)

    def evaluates(self, step: int) -> bool:
        """At every eval_interval, at the end of the offline phase and at the end of the run."""
        return is_due(step, self.eval_interval) or step in (self.offline_steps, self.total_steps)

    @property
    def num_evaluations(self) -> int:
        """How many steps of the run `evaluates`."""
        every = self.total_steps // self.eval_interval if self.eval_interval > 0 else 0
        phase_ends = {self.offline_steps, self.total_steps} - {0}
        return every + sum(not is_due(step, self.eval_interval) for step in phase_ends)

    def saves(self, step: int) -> bool:
        """At every save_interval and at the end of each phase."""
        return is_due(step, self.save_interval) or step in (self.offline_steps, self.total_steps)
