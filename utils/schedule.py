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
        first, so every event lands exactly on its step."""
        intervals = (self.log_interval, self.eval_interval, self.save_interval, self.shard_interval)
        stops = [self.offline_steps, step + self.steps_per_call]
        stops += [(step // interval + 1) * interval for interval in intervals if interval > 0]
        return min(stops)

    def logs(self, step: int) -> bool:
        return is_due(step, self.log_interval)

    def evaluates(self, step: int) -> bool:
        """At every eval_interval and at the end of the run."""
        return is_due(step, self.eval_interval) or step == self.total_steps

    def saves_offline(self, step: int) -> bool:
        """At every save_interval and at the end of the offline phase."""
        return is_due(step, self.save_interval) or step == self.offline_steps

    def save_due_online(self, step: int) -> bool:
        """A save_interval has passed: the online phase saves at the next episode end (and at its end)."""
        return is_due(step, self.save_interval)
