"""The job lifecycle: start the roles, watch them, tear everything down the moment anything fails.

ps-lite has no failure detection (one dead role leaves the others blocked forever): this is it.
It drives any `Runner` and never knows which one. One thread (the caller's) does all the bookkeeping;
runners hand over output and endings as events on one queue, signals arrive on the same queue.

Start: every role at once (ps-lite's nodes wait for the scheduler by themselves), and every bind is
confirmed while they start, from ps-lite's own lines (PS_VERBOSE=1): the scheduler's "Bind to
role=scheduler ... port=P", each node's "Bind to role=worker ... port=P" (its PORT, which decides its
rank: launcher/jobs/plan.py) and "W[id] is connected" (the rank it got). A bind that failed or moved, or a
worker whose rank is not its index, restarts the whole start on another block of ports: every role
is stopped, then all start again, so no worker ever keeps talking to a stranger on the scheduler's port
and worker-i is always rank i. The job succeeds when every worker exits 0; servers and the scheduler
then end by themselves (ps-lite's finalize) and are stopped if they linger.

Spot interruptions (launch train --watch-spot): the first guard on each host polls its instance's notice.
On the first notice of an attempt rank 0 is asked to save a checkpoint where it is, when it can (launcher/jobs/spot.py);
when it has ended (or after `spot_wait` seconds) the job is torn down with Reason.SPOT, which a restart continues
from that checkpoint. Only a role ending non-zero in that wait ends it early: rank 0 ending 0 finished training.

A signal wins over a teardown already under way for a failure or a notice: the outcome is the signal's, so the
launch ends instead of restarting (what the user asked for).
"""
from __future__ import annotations

import queue
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from mxlaunch.launcher.jobs import ports, workload
from mxlaunch.launcher.jobs.outcome import SIGNAL_REASONS, JobOutcome, Reason
from mxlaunch.launcher.jobs.output import RoleOutputSink
from mxlaunch.launcher.jobs.plan import JobPlan
from mxlaunch.infra.transport.roles import Role
from mxlaunch.infra.transport.roles import SCHEDULER_ID, WORKER
from mxlaunch.infra.transport.runner import (Events, RoleEnded, RoleHandle, RoleLaunch, RoleOutput, RoleResult,
                             RoleStarted, Runner, SpotNotice)
from mxlaunch.launcher.jobs.spot import SPOT_POLL, SPOT_WAIT, FirstNotice, SpotState, Step, first_notice, rank0_of

# ps-lite (PS_VERBOSE=1): each node's bind (port=-1 after a failed one, just before it aborts) ...
NODE_BOUND = re.compile(rb"Bind to role=(\w+), (?:id=\d+, )?ip=[^,]*, port=(-?\d+)")
# ... and its id once connected; ids are 8 + 2*rank (servers), 9 + 2*rank (workers)
NODE_CONNECTED = re.compile(rb"\b([WS])\[(\d+)\] is connected to others")
TICK = 0.05  # longest time an event-free loop waits before looking at its deadlines
DRAIN_BATCH = 500  # a chatty role must not keep the loop from its deadlines


class Clock:
    """Job's time and its one wait. Tests pass a fake that moves its time on instead of sleeping."""

    def monotonic(self) -> float:  # for deadlines
        return time.monotonic()

    def wall(self) -> float:  # for what records show (start, end)
        return time.time()

    def next_event(self, events: Events, timeout: float):
        """The next event, after waiting at most `timeout` seconds for one; queue.Empty if none came."""
        return events.get(timeout=timeout)


@dataclass(frozen=True)
class SignalReceived:
    signum: int


@dataclass(frozen=True)
class JobSettings:
    grace: float = 1.0  # SIGTERM -> SIGKILL, per role
    finish_grace: float = 10.0  # after every worker succeeded, how long servers/scheduler may take to end
    port_tries: int = 5  # starts of the whole job (a failed or moved bind restarts it on other ports)
    kill_wait: float = 0.5  # after the grace, before guards that did not report are killed
    abandon_wait: float = 1.5  # after that, roles that still did not report are given up on
    spot_poll: float = SPOT_POLL  # seconds between looks at a host's spot notice (jobs that watch)
    spot_wait: float = SPOT_WAIT  # after a notice, how long rank 0 may take to save its checkpoint and end (or
    # the other workers to finish, when rank 0 already had)


@dataclass
class _State:
    plan: JobPlan
    handles: Dict[str, RoleHandle] = field(default_factory=dict)
    live: Dict[str, Role] = field(default_factory=dict)
    results: Dict[str, RoleResult] = field(default_factory=dict)
    pids: Dict[str, Tuple[int, float]] = field(default_factory=dict)
    ranks: Dict[str, int] = field(default_factory=dict)
    bound: set = field(default_factory=set)  # roles whose bind line named their planned port
    restart_port: Optional[int] = None  # every role is being stopped, to start again on this port
    stopping: Optional[Reason] = None  # Reason.OK: every worker succeeded, what lingers is stopped
    first_failure: Optional[RoleResult] = None
    teardown_started: Optional[float] = None
    kill_at: Optional[float] = None
    abandon_at: Optional[float] = None
    finishing_at: Optional[float] = None
    ports_tried: List[int] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    spot: SpotState = field(default_factory=SpotState)


class Job:
    def __init__(self, make_plan: Callable[[int], JobPlan], first_port: int, runner: Runner,
                 sink: RoleOutputSink, settings: JobSettings = JobSettings(), cwd: Optional[str] = None,
                 choose_port: Callable[[List[int]], int] = lambda avoid: ports.choose_port(avoid=avoid),
                 clock: Clock = Clock()):
        self.make_plan = make_plan
        self.first_port = first_port
        self.runner = runner
        self.sink = sink
        self.settings = settings
        self.cwd = cwd
        self.choose_port = choose_port
        self.clock = clock
        self.events: Events = Events()

    # ------------------------------------------------------------------------------------------ public
    def run(self) -> JobOutcome:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_REASONS:
                previous[signum] = signal.signal(signum, lambda s, f: self.events.put(SignalReceived(s)))
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.runner.close()

    # ------------------------------------------------------------------------------------------ steps
    def _launch(self, role: Role) -> RoleLaunch:
        watches = role.name in self.state.plan.spot_watchers()
        return RoleLaunch(role=role, argv=self.state.plan.spec.command, cwd=self.cwd, grace=self.settings.grace,
                          spot_poll=self.settings.spot_poll if watches else None)

    def _start(self, role: Role) -> None:
        self.state.live[role.name] = role
        try:
            self.state.handles[role.name] = self.runner.start(self._launch(role), self.events)
        except Exception as exc:  # the runner could not even start its guard (ssh refused, ...)
            del self.state.live[role.name]
            now = self.clock.wall()
            self._ended(RoleResult(name=role.name, kind=role.kind, index=role.index, host=role.host.address,
                                   pid=None, start=now, end=now, exit_code=None, signal=None,
                                   error=f"could not be started: {exc}"))

    def _start_all(self) -> None:
        st = self.state
        st.ranks.clear()
        st.spot.trained.clear()
        st.bound.clear()
        st.results.clear()
        for role in st.plan.roles:
            if st.stopping:
                return
            self._start(role)

    def _stop_all(self) -> None:
        st = self.state
        st.kill_at = self.clock.monotonic() + self.settings.grace + self.settings.kill_wait
        for name in list(st.live):
            st.handles[name].stop()

    def _begin_teardown(self, reason: Reason) -> None:
        st = self.state
        if st.stopping:
            if reason.imposed and st.stopping in (Reason.FAILED, Reason.SPOT):  # a signal overrules: no restart
                st.notes.append(f"{reason.value} while every role was being stopped ({st.stopping.value})")
                st.stopping = reason
            return
        st.stopping = reason
        st.restart_port = None
        st.teardown_started = self.clock.wall()
        self._stop_all()

    def _restart(self, problem: str, failed_port: Optional[int]) -> bool:
        """Stop every role to start the whole job again on other ports; False when the tries are spent."""
        st = self.state
        if st.stopping or st.restart_port is not None:
            return st.restart_port is not None  # already restarting: this is an echo of the same start
        st.ports_tried.append(st.plan.port if failed_port is None else failed_port)
        if len(st.ports_tried) >= self.settings.port_tries:
            return False
        port = self.choose_port(st.ports_tried)
        note = f"{problem}; restarting every role on port {port}"
        st.notes.append(note)
        self.sink.notice(note)
        st.restart_port = port
        self._stop_all()
        return True

    def _check_node(self, name: str, data: bytes) -> None:
        """Confirm a role's bind and rank from its ps-lite lines; restart the start on a mismatch."""
        st = self.state
        role = st.plan.role(name)
        bound = NODE_BOUND.search(data)
        if bound:
            planned = st.plan.port if role.id == SCHEDULER_ID else role.env_dict().get("PORT")
            port = int(bound.group(2))
            if planned is None or port == int(planned):
                st.bound.add(name)
            else:
                what = "could not bind" if port < 0 else f"bound port {port} instead of"
                self._restart(f"{role.label} {what} port {planned}", int(planned))
            return
        found = NODE_CONNECTED.search(data)
        if found and name not in st.ranks:
            rank = (int(found.group(2)) - (9 if found.group(1) == b"W" else 8)) // 2
            st.ranks[name] = rank
            if role.kind == WORKER and rank != role.index and not self._restart(
                    f"{role.label} was given MXNet rank {rank}", None):
                note = f"{role.label} runs as MXNet rank {rank} (ports kept moving; see summary.json mxnet_rank)"
                st.notes.append(note)
                self.sink.notice(note, error=True)

    # ------------------------------------------------------------------------------------------ events
    def _ended(self, result: RoleResult) -> None:
        st = self.state
        st.live.pop(result.name, None)
        if st.stopping:
            st.results[result.name] = result
            return
        if st.restart_port is not None:  # an end this restart asked for: not a result of the job
            return
        if st.spot.deadline is not None and not result.ok:
            # rank 0 ended after saving (exit 75: not a failure of its own), or a peer it needs is gone
            st.results[result.name] = result
            if st.spot.asked and result.name != st.spot.asked:
                st.notes.append(f"{result.name} ended ({result.how()}) while rank 0 was saving its checkpoint")
            self._begin_teardown(Reason.SPOT)
            return
        if (result.name == SCHEDULER_ID.name and not result.ok and SCHEDULER_ID.name not in st.bound
                and ports.bind_failed(self.sink.tail(SCHEDULER_ID.name))
                and self._restart(f"scheduler could not bind port {st.plan.port}", st.plan.port)):
            return
        st.results[result.name] = result
        if not result.ok:
            st.first_failure = result
            self._begin_teardown(Reason.FAILED)
            return
        workers_left = [n for n in st.live if st.plan.role(n).kind == WORKER]
        if result.kind == WORKER and not workers_left and st.finishing_at is None:
            st.finishing_at = self.clock.monotonic() + self.settings.finish_grace

    def _handle(self, event) -> None:
        st = self.state
        if isinstance(event, RoleOutput):
            self.sink.line(event.name, event.data)
            st.spot.saw(event.name, event.data)
            if not st.stopping and (b"Bind to role=" in event.data or b"is connected to others" in event.data):
                self._check_node(event.name, event.data)
        elif isinstance(event, RoleStarted):
            st.pids[event.name] = (event.pid, event.time)
        elif isinstance(event, RoleEnded):
            self._ended(event.result)
        elif isinstance(event, SpotNotice):
            self._spot_notice(event)
        elif isinstance(event, SignalReceived):
            self._begin_teardown(SIGNAL_REASONS.get(event.signum, Reason.TERMINATED))

    def _spot_notice(self, notice: SpotNotice) -> None:
        """A host is going away: the attempt's first notice does what launcher/jobs/spot.py says; later ones are notes."""
        st = self.state
        host = st.plan.role(notice.name).host.address
        if host in st.spot.hosts:
            return
        st.spot.hosts.append(host)
        if st.stopping:
            return
        text = f"spot interruption notice for {host} (action {notice.action} at {notice.time})"
        first = self._first_notice() if len(st.spot.hosts) == 1 else None
        if first is not None and first.step is Step.ASK and not st.handles[first.rank0].checkpoint():
            first = FirstNotice(Step.STOP, f"the checkpoint request could not be sent to rank 0 ({first.rank0}); "
                                           f"stopping every role")
        text += f": {first.why}" if first else ""
        st.notes.append(text)
        self.sink.mark(text)
        if first is None or first.step is Step.FINISHING:
            return
        if first.step is Step.STOP:
            self._begin_teardown(Reason.SPOT)
            return
        st.spot.asked = first.rank0
        st.spot.deadline = self.clock.monotonic() + self.settings.spot_wait

    def _first_notice(self) -> FirstNotice:
        st = self.state
        rank0 = rank0_of(st.ranks, [w.name for w in st.plan.workers])
        ended = st.results.get(rank0) if rank0 else None
        return first_notice(trainer=workload.is_trainer(st.plan.spec.command), rank0=rank0,
                            finished=st.finishing_at is not None, rank0_ok=ended is not None and ended.ok,
                            running=rank0 in st.live and st.restart_port is None, trained=rank0 in st.spot.trained)

    # ------------------------------------------------------------------------------------------ loop
    def _run(self) -> JobOutcome:
        started = self.clock.wall()
        t0 = self.clock.monotonic()
        self.state = st = _State(plan=self.make_plan(self.first_port))
        timeout = st.plan.spec.timeout
        deadline = t0 + timeout if timeout else None
        self._start_all()
        while True:
            now = self.clock.monotonic()
            if not st.stopping:
                if deadline is not None and now >= deadline:
                    self._begin_teardown(Reason.TIMEOUT)
                elif st.finishing_at is not None and now >= st.finishing_at:
                    self._begin_teardown(Reason.OK)
                elif st.spot.deadline is not None and st.finishing_at is None and now >= st.spot.deadline:
                    st.notes.append(st.spot.overdue(self.settings.spot_wait))
                    self._begin_teardown(Reason.SPOT)
            if not st.live and st.restart_port is not None:  # every role of the failed start is gone
                st.plan, st.restart_port, st.kill_at, st.abandon_at = self.make_plan(st.restart_port), None, None, None
                self._start_all()
            if not st.live:
                break
            if (st.stopping or st.restart_port is not None) and st.kill_at is not None and now >= st.kill_at:
                for name in list(st.live):
                    st.handles[name].kill()
                st.kill_at, st.abandon_at = None, now + self.settings.abandon_wait
            if st.abandon_at is not None and now >= st.abandon_at:
                self._abandon()
                break
            try:
                self._handle(self.clock.next_event(self.events, TICK))
                for _ in range(DRAIN_BATCH):  # what is already queued, then the clock again
                    self._handle(self.events.get_nowait())
            except queue.Empty:
                pass
        return self._outcome(started)

    def _abandon(self) -> None:
        st = self.state
        st.stopping = st.stopping or Reason.FAILED
        for name, role in list(st.live.items()):
            pid, start = st.pids.get(name, (None, None))
            st.results[name] = RoleResult(name=name, kind=role.kind, index=role.index, host=role.host.address,
                                          pid=pid, start=start, end=self.clock.wall(), exit_code=None,
                                          signal=None, stopped=st.stopping.value, error="did not report its end")
            st.notes.append(f"{role.label} on {role.host.address} did not report its end; its guard was killed")
        st.live.clear()

    def _outcome(self, started: float) -> JobOutcome:
        st = self.state
        workers = [st.results.get(r.name) for r in st.plan.workers]
        if st.stopping is not None and (st.stopping.imposed or st.stopping is Reason.SPOT):
            reason = st.stopping
        elif st.first_failure is None and all(w is not None and w.ok for w in workers):
            reason = Reason.OK
        else:
            reason = Reason.FAILED
        order = [r.name for r in st.plan.roles]
        results = tuple(st.results[n] for n in order if n in st.results)
        return JobOutcome(reason=reason, plan=st.plan, results=results,
                          first_failure=st.first_failure, started=started, ended=self.clock.wall(),
                          teardown_started=st.teardown_started, notes=tuple(st.notes),
                          ranks=tuple(sorted(st.ranks.items())), spot_hosts=tuple(st.spot.hosts))
