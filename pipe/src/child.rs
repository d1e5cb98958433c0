//! [`ChildAgent`]: a child process whose standard input and output are a chain agent, its
//! exit watched from the reactor and reported to the chain.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rustix::process::{Pid, PidfdFlags};
use weir_io::{
    attach, ByteConsumer, ByteIoPair, ByteProducer, ControlReply, Credit, Ending, HalfClosePolicy,
    IoControl, Link, LinkSlot, Peer,
};
use weir_reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, Token};
use weir_sock::{AgentConfig, StreamAgent};

use crate::{PipeIo, PipeReader, PipeWriter};

/// What to do with a child's standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stderr {
    /// A pipe read by its own agent: [`ChildAgent::stderr`].
    Agent,
    /// The child writes to this process's standard error.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
}

/// How a [`ChildAgent`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildOptions {
    /// The agent of the standard input and output. Default [`AgentConfig::default()`], with
    /// half-close: the end of the chain that feeds the child closes its standard input (so a
    /// filter such as `cat` sees end of file) while its output is still read.
    pub config: AgentConfig,
    /// Where standard error goes. Default [`Stderr::Inherit`].
    pub stderr: Stderr,
    /// Kill the child (`SIGKILL`) when the last [`ChildAgent`] handle is dropped and it has
    /// not exited. Default off: the child runs on, and is still reaped when it exits.
    pub kill_on_drop: bool,
}

impl Default for ChildOptions {
    fn default() -> Self {
        ChildOptions {
            config: AgentConfig::default(),
            stderr: Stderr::Inherit,
            kill_on_drop: false,
        }
    }
}

impl ChildOptions {
    /// These options with `config` for the standard input and output.
    #[must_use]
    pub fn with_config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }

    /// These options with standard error going to `stderr`.
    #[must_use]
    pub fn with_stderr(mut self, stderr: Stderr) -> Self {
        self.stderr = stderr;
        self
    }

    /// These options with [`kill_on_drop`](Self::kill_on_drop) set.
    #[must_use]
    pub fn with_kill_on_drop(mut self, kill_on_drop: bool) -> Self {
        self.kill_on_drop = kill_on_drop;
        self
    }
}

/// The control message a [`ChildAgent`] sends downstream when its child has exited, as
/// [`IoControl::Custom`]; read it with [`ChildExited::from_control`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildExited {
    /// The child's process id.
    pub pid: u32,
    /// How it exited.
    pub status: ExitStatus,
}

impl ChildExited {
    /// The exit report a control message carries, if it is one.
    pub fn from_control(message: &IoControl) -> Option<ChildExited> {
        match message {
            IoControl::Custom(payload) => payload.downcast_ref::<ChildExited>().copied(),
            _ => None,
        }
    }
}

/// A child process as a chain agent: what the chain feeds it goes to its standard input,
/// what it writes to its standard output comes out of its producer.
///
/// ```text
///                    ┌────────────────────── ChildAgent ──────────────────────┐
///  upstream ────────▶│ consumer ─▶ StreamAgent ─▶ stdin ─▶ ┌───────┐          │
///  producer          │                                     │ child │ ─ exit ─┐│
///  downstream ◀──────│ producer ◀─ exit gate ◀─ StreamAgent ◀─ stdout ◀──┘       ││
///  consumer          │    ▲ ChildExited, then the end ◀─ pidfd (reactor) ◀───────┘│
///                    └─────────────────────────────────────────────────────────┘
/// ```
///
/// Start it with [`spawn`](Self::spawn) and attach chains to [`io_pair`](Self::io_pair).
///
/// # Flow control
///
/// Standard input and output are one [`StreamAgent`] over a [`PipeIo`], so the socket
/// agent's rules hold: the child's output is read only as far as the downstream credit
/// allows, and the upstream gets credit only for free space in the write buffer
/// ([`AgentConfig::write_buffer`]). A child that reads slowly fills the pipe, then the
/// buffer, and then the upstream stops: nothing grows without bound.
///
/// # Exit and ends
///
/// - The child is watched with a pidfd registered with the reactor (Linux 5.3 or later; older
///   kernels fall back to a helper thread that waits without reaping). When it exits it is
///   reaped at once (no zombie), the [`on_exit`](Self::on_exit) callbacks run, and
///   [`ChildExited`] goes downstream as [`IoControl::Custom`].
/// - The downstream chain ends once the child's standard output has reached end of file
///   **and** the child has exited, always after `ChildExited`: [`Ending::Completed`] if its
///   output ended cleanly and it exited with status 0, [`Ending::Lost`] otherwise (a non-zero
///   status, a signal, a read error). A grandchild that keeps the output pipe open keeps the
///   chain open too.
/// - If the child stops reading before the upstream chain has ended (it exited, or closed its
///   standard input), the write fails with `EPIPE` and the upstream chain is aborted; the
///   process is never killed by `SIGPIPE` (see [`PipeWriter`]).
/// - Once the downstream chain has ended the agent closes: both descriptors are
///   deregistered, then closed, and an upstream chain still open is aborted (the child is
///   gone, nothing more can be written to it).
///
/// # Killing
///
/// [`kill`](Self::kill) sends `SIGKILL`; [`ChildOptions::kill_on_drop`] does it when the last
/// handle is dropped. Otherwise the child outlives its handles, and is still reaped. If the
/// reactor stops first, a helper thread waits for the child so that it is reaped anyway.
///
/// # Threading
///
/// `ChildAgent` is `Send + Sync + Clone`; its methods work from any thread. Callbacks run on
/// the reactor thread.
#[doc(alias = "VPipeAgent")]
#[derive(Clone)]
pub struct ChildAgent {
    /// The user's handle; dropping the last one may kill the child.
    guard: Arc<Guard>,
}

/// Kills the child on drop if asked to.
struct Guard {
    /// The shared state.
    inner: Arc<ChildInner>,
    /// Kill the child when this is dropped.
    kill_on_drop: bool,
}

/// What the handles, the watcher and the gate share.
struct ChildInner {
    /// The reactor everything runs on.
    reactor: Reactor,
    /// The child's process id.
    pid: u32,
    /// The agent over standard input and output.
    agent: StreamAgent,
    /// The agent over standard error, with [`Stderr::Agent`].
    stderr: Option<StreamAgent>,
    /// The element between the agent's producer and the downstream chain.
    gate: Arc<Gate>,
    /// The process and its exit.
    state: Mutex<ChildState>,
}

/// Mutable part of [`ChildInner`].
struct ChildState {
    /// The process, until it is reaped.
    child: Option<Child>,
    /// How it exited, once reaped.
    status: Option<ExitStatus>,
    /// Called on exit.
    on_exit: Vec<Box<dyn FnOnce(ExitStatus) + Send>>,
    /// The pidfd registration and the pidfd (deregistered before it is closed).
    watch: Option<(Token, OwnedFd)>,
}

/// Reactor handle of the pidfd.
struct ExitWatch(Arc<ChildInner>);

impl ChildAgent {
    /// Spawns `command` with its standard input and output piped to a new agent on
    /// `reactor` (standard error as `options` says). The agent's consumer side is ready at
    /// once; its producer side waits for a downstream consumer (the child's output stays in
    /// the pipe until then).
    ///
    /// # Errors
    ///
    /// The process could not be spawned, a descriptor could not be set up, or the reactor
    /// refused it (the child is then killed and reaped).
    pub fn spawn(
        reactor: &Reactor,
        command: &mut Command,
        options: ChildOptions,
    ) -> io::Result<ChildAgent> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        command.stderr(match options.stderr {
            Stderr::Agent => Stdio::piped(),
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Null => Stdio::null(),
        });
        let mut child = command.spawn()?;
        match ChildAgent::wrap(reactor, &mut child, options) {
            Ok((agent, stderr)) => Ok(ChildAgent::start(reactor, child, agent, stderr, options)),
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(err)
            }
        }
    }

    /// The consumer (to the child's standard input) and the producer (from its standard
    /// output), to attach chains.
    pub fn io_pair(&self) -> ByteIoPair {
        let inner = &self.guard.inner;
        ByteIoPair::new(
            inner.agent.io_pair().consumer,
            Arc::new(GateProducer(inner.gate.clone())),
        )
    }

    /// The agent over standard input and output (for [`StreamAgent::set_close_callback`],
    /// [`StreamAgent::buffered`] and the like). Attach chains through
    /// [`io_pair`](Self::io_pair), not through this agent's own pair.
    pub fn agent(&self) -> &StreamAgent {
        &self.guard.inner.agent
    }

    /// The agent reading standard error, with [`Stderr::Agent`]: its producer gives what the
    /// child writes there (it ends [`Ending::Completed`] at end of file), its consumer is
    /// closed.
    pub fn stderr(&self) -> Option<&StreamAgent> {
        self.guard.inner.stderr.as_ref()
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.guard.inner.pid
    }

    /// How the child exited, once it has (and was reaped).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.guard.inner.state.lock().status
    }

    /// Calls `f` once, on the reactor thread, with the exit status when the child has exited;
    /// right away (on the reactor thread) if it has already.
    pub fn on_exit(&self, f: impl FnOnce(ExitStatus) + Send + 'static) {
        let mut state = self.guard.inner.state.lock();
        match state.status {
            Some(status) => {
                drop(state);
                self.guard.inner.reactor.execute(move || f(status));
            }
            None => state.on_exit.push(Box::new(f)),
        }
    }

    /// Kills the child with `SIGKILL` (any thread). Harmless once it has exited.
    ///
    /// # Errors
    ///
    /// What `kill` reports.
    pub fn kill(&self) -> io::Result<()> {
        self.guard.inner.kill()
    }

    /// Takes the child's pipes, makes the agents.
    fn wrap(
        reactor: &Reactor,
        child: &mut Child,
        options: ChildOptions,
    ) -> io::Result<(StreamAgent, Option<StreamAgent>)> {
        let pid = child.id();
        let missing = || io::Error::other("child pipe missing");
        let stdin = PipeWriter::new(child.stdin.take().ok_or_else(missing)?)?;
        let stdout = PipeReader::new(child.stdout.take().ok_or_else(missing)?)?;
        let agent = PipeIo::new(Some(stdout), Some(stdin))
            .with_peer(Peer::Process(pid))
            .into_agent(reactor, options.config)
            .map_err(io::Error::other)?;
        let stderr = match child.stderr.take() {
            Some(stderr) => {
                // Input only: the missing output closes at once, and must not take input
                // with it.
                let config = options.config.with_half_close(HalfClosePolicy::HALF_CLOSE);
                let stderr_agent = PipeIo::new(Some(PipeReader::new(stderr)?), None)
                    .with_peer(Peer::Process(pid))
                    .into_agent(reactor, config);
                match stderr_agent {
                    Ok(stderr) => Some(stderr),
                    Err(err) => {
                        agent.close(Ending::Lost);
                        return Err(io::Error::other(err));
                    }
                }
            }
            None => None,
        };
        Ok((agent, stderr))
    }

    /// Joins the agent to the gate and starts watching the child.
    fn start(
        reactor: &Reactor,
        child: Child,
        agent: StreamAgent,
        stderr: Option<StreamAgent>,
        options: ChildOptions,
    ) -> ChildAgent {
        let pid = child.id();
        let gate = Arc::new(Gate {
            reactor: reactor.clone(),
            pid,
            up: LinkSlot::new(),
            down: LinkSlot::new(),
            agent: Mutex::new(Some(agent.clone())),
            state: Mutex::new(GateState::default()),
        });
        let up: Arc<dyn ByteConsumer> = Arc::new(GateConsumer(gate.clone()));
        // Both are fresh, on the same reactor: this cannot fail.
        if let Err(err) = attach(&agent.io_pair().producer, &up) {
            tracing::error!(%err, "attaching the exit gate failed");
        }
        let pidfd = rustix::process::pidfd_open(Pid::from_child(&child), PidfdFlags::empty());
        let inner = Arc::new(ChildInner {
            reactor: reactor.clone(),
            pid,
            agent,
            stderr,
            gate,
            state: Mutex::new(ChildState {
                child: Some(child),
                status: None,
                on_exit: Vec::new(),
                watch: None,
            }),
        });
        match pidfd {
            Ok(pidfd) => {
                let handle = Arc::new(ExitWatch(inner.clone()));
                match reactor.register(std::os::fd::AsFd::as_fd(&pidfd), Interest::READ, handle) {
                    Ok(token) => inner.state.lock().watch = Some((token, pidfd)),
                    Err(err) => {
                        tracing::debug!(%err, "registering the pidfd failed");
                        inner.watch_with_thread();
                    }
                }
            }
            Err(err) => {
                tracing::debug!(%err, "pidfd_open failed; watching with a thread");
                inner.watch_with_thread();
            }
        }
        ChildAgent {
            guard: Arc::new(Guard {
                inner,
                kill_on_drop: options.kill_on_drop,
            }),
        }
    }
}

impl fmt::Debug for ChildAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildAgent")
            .field("pid", &self.guard.inner.pid)
            .field("status", &self.exit_status())
            .field("agent", &self.guard.inner.agent)
            .finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.kill_on_drop {
            if let Err(err) = self.inner.kill() {
                tracing::debug!(%err, "kill on drop failed");
            }
        }
    }
}

impl ChildInner {
    /// Sends `SIGKILL` unless the child was reaped.
    fn kill(&self) -> io::Result<()> {
        match self.state.lock().child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }

    /// Reaps the child if it has exited, and reports the exit (reactor thread).
    fn poll_exit(&self) {
        let (status, callbacks, watch) = {
            let mut state = self.state.lock();
            let Some(child) = state.child.as_mut() else {
                return;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) => return,
                Err(err) => {
                    // ECHILD: someone else reaped it (SIGCHLD ignored, a stray waitpid).
                    tracing::warn!(%err, pid = self.pid, "cannot reap child");
                    None
                }
            };
            state.child = None;
            state.status = status;
            let callbacks = if status.is_some() {
                std::mem::take(&mut state.on_exit)
            } else {
                Vec::new()
            };
            (status, callbacks, state.watch.take())
        };
        if let Some((token, pidfd)) = watch {
            self.reactor.deregister(token);
            drop(pidfd);
        }
        if let Some(status) = status {
            tracing::debug!(pid = self.pid, %status, "child exited");
            for callback in callbacks {
                callback(status);
            }
        }
        self.gate.exited(status);
    }

    /// Watches the child with a thread that waits for the exit without reaping it, then
    /// reaps it on the reactor thread (no pidfd, or the reactor refused it).
    fn watch_with_thread(self: &Arc<Self>) {
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-child-wait".into())
            .spawn(move || {
                let Some(pid) = i32::try_from(inner.pid).ok().and_then(Pid::from_raw) else {
                    return;
                };
                let options =
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
                let wait = || rustix::process::waitid(rustix::process::WaitId::Pid(pid), options);
                while let Err(rustix::io::Errno::INTR) = wait() {}
                let reactor = inner.reactor.clone();
                if reactor.is_finished() {
                    inner.reap_blocking();
                } else {
                    reactor.call(move || inner.poll_exit());
                }
            });
        if let Err(err) = spawned {
            tracing::error!(%err, pid = self.pid, "cannot watch child");
        }
    }

    /// Waits for the child and reaps it, off the reactor (the reactor has stopped).
    fn reap_blocking(&self) {
        let child = self.state.lock().child.take();
        if let Some(mut child) = child {
            match child.wait() {
                Ok(status) => self.state.lock().status = Some(status),
                Err(err) => tracing::warn!(%err, pid = self.pid, "cannot reap child"),
            }
        }
    }
}

impl ByteHandle for ExitWatch {
    fn on_readable(&self) {
        self.0.poll_exit();
    }

    fn on_close(&self, direction: Direction, reason: CloseReason) {
        if direction != Direction::Both {
            // A hang-up leaves the pidfd readable: `on_readable` follows.
            return;
        }
        let watch = self.0.state.lock().watch.take();
        drop(watch);
        if reason == CloseReason::Stopped {
            // Reap it anyway, so that it does not stay a zombie.
            let inner = self.0.clone();
            let spawned = std::thread::Builder::new()
                .name("weir-child-reap".into())
                .spawn(move || inner.reap_blocking());
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot reap child after the reactor stopped");
            }
        } else {
            self.0.watch_with_thread();
        }
    }
}

/// Between the agent's producer and the downstream chain: passes bytes and credit through,
/// and holds the end until the child's exit is known.
struct Gate {
    /// The reactor.
    reactor: Reactor,
    /// The child's process id, for [`ChildExited`].
    pid: u32,
    /// Link from the agent's producer.
    up: LinkSlot,
    /// Link to the downstream consumer.
    down: LinkSlot,
    /// The agent, to close once the child has exited and its output has ended (taken then,
    /// which also breaks the cycle agent → link → gate → agent).
    agent: Mutex<Option<StreamAgent>>,
    /// Everything else.
    state: Mutex<GateState>,
}

/// Mutable part of a [`Gate`].
#[derive(Default)]
struct GateState {
    /// Bytes received but not delivered: only when the downstream detached with credit
    /// granted upstream.
    pending: VecDeque<Bytes>,
    /// Bytes in `pending`.
    pending_len: u64,
    /// How the child's output ended, once it has.
    output_end: Option<Ending>,
    /// The exit, once known (`Some(None)`: the child was reaped by someone else).
    exit: Option<Option<ExitStatus>>,
    /// `ChildExited` was sent.
    reported: bool,
    /// The last `Connected` from the agent, for a consumer that attaches later.
    connected: Option<IoControl>,
    /// A flush runs.
    flushing: bool,
    /// The downstream was ended or aborted.
    finished: bool,
}

/// The gate's consumer side (attached to the agent's producer).
struct GateConsumer(Arc<Gate>);
/// The gate's producer side (what [`ChildAgent::io_pair`] gives).
struct GateProducer(Arc<Gate>);

impl Gate {
    /// Credit for the agent: what the downstream still allows, less what is pending.
    fn upstream_credit(&self, up: &Link) -> Credit {
        let remaining = self.down.link().map_or(0, |l| l.remaining());
        let pending = self.state.lock().pending_len;
        up.window(remaining.saturating_sub(pending))
    }

    /// Delivers pending bytes as downstream credit allows.
    fn flush(&self) {
        {
            let mut state = self.state.lock();
            if state.flushing {
                return;
            }
            state.flushing = true;
        }
        let link = self.down.link();
        loop {
            let remaining = link.as_ref().map_or(0, |l| l.remaining());
            let chunk = {
                let mut state = self.state.lock();
                if state.pending.is_empty() || remaining == 0 {
                    state.flushing = false;
                    break;
                }
                let front = state.pending.front_mut().expect("checked not empty");
                let chunk = if front.len() as u64 <= remaining {
                    state.pending.pop_front().expect("checked not empty")
                } else {
                    // `remaining` is below `front.len()`, a usize.
                    front.split_to(remaining as usize)
                };
                state.pending_len -= chunk.len() as u64;
                chunk
            };
            if let Some(link) = &link {
                if link.deliver(chunk).is_err() {
                    self.state.lock().flushing = false;
                    break;
                }
            }
        }
    }

    /// The child exited (or cannot be waited for).
    fn exited(&self, status: Option<ExitStatus>) {
        self.state.lock().exit.get_or_insert(status);
        self.try_finish();
    }

    /// Sends `ChildExited` when the exit is known, then the end when the output has ended
    /// too and everything was delivered.
    fn try_finish(&self) {
        let Some(link) = self.down.link() else { return };
        let (report, ending) = {
            let mut state = self.state.lock();
            if state.finished {
                return;
            }
            let report = match state.exit {
                Some(status) if !state.reported => {
                    state.reported = true;
                    status
                }
                _ => None,
            };
            let ending = match (state.output_end, state.exit) {
                (Some(output), Some(exit)) if state.pending.is_empty() => {
                    state.finished = true;
                    let clean = output.is_completed() && exit.is_some_and(|s| s.success());
                    Some(if clean {
                        Ending::Completed
                    } else {
                        Ending::Lost
                    })
                }
                _ => None,
            };
            (report, ending)
        };
        if let Some(status) = report {
            let message = IoControl::Custom(Arc::new(ChildExited {
                pid: self.pid,
                status,
            }));
            link.control_downstream(&message);
        }
        if let Some(ending) = ending {
            self.down.mark_ended();
            link.end(ending);
            // The child is gone: nothing more can be written to it. Closing releases the
            // descriptors now even if the upstream never ended (it is aborted).
            if let Some(agent) = self.agent.lock().take() {
                agent.close(Ending::Lost);
            }
        }
    }

    /// The downstream gave up: stop reading the child's output.
    fn abort_upstream(&self) {
        {
            let mut state = self.state.lock();
            state.finished = true;
            state.pending.clear();
            state.pending_len = 0;
        }
        self.up.mark_ended();
        if let Some(link) = self.up.link() {
            link.abort();
        }
        self.agent.lock().take();
    }
}

impl ByteConsumer for GateConsumer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.0.up
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.0.upstream_credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        {
            let mut state = self.0.state.lock();
            if state.finished {
                return link.credit();
            }
            state.pending_len += data.len() as u64;
            state.pending.push_back(data);
        }
        self.0.flush();
        self.0.upstream_credit(link)
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        self.0.state.lock().output_end.get_or_insert(ending);
        self.0.flush();
        self.0.try_finish();
    }

    fn on_abort(&self) {
        self.0.state.lock().output_end.get_or_insert(Ending::Lost);
        self.0.try_finish();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        if matches!(message, IoControl::Connected(_)) {
            self.0.state.lock().connected = Some(message.clone());
        }
        match self.0.down.link() {
            Some(link) => link.control_downstream(message),
            None => ControlReply::Unsupported,
        }
    }
}

impl ByteProducer for GateProducer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.0.down
    }

    fn on_attached(&self, _link: &Arc<Link>) {
        // After the consumer's own `on_attached`: replay what it missed, and the end if due.
        let gate = self.0.clone();
        self.0.reactor.call(move || {
            let connected = gate.state.lock().connected.clone();
            if let (Some(message), Some(link)) = (connected, gate.down.link()) {
                link.control_downstream(&message);
            }
            gate.try_finish();
        });
    }

    fn on_credit(&self, _link: &Arc<Link>) {
        self.0.flush();
        if let Some(up) = self.0.up.link() {
            up.grant(self.0.upstream_credit(&up));
        }
        self.0.try_finish();
    }

    fn on_abort(&self) {
        self.0.abort_upstream();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match self.0.up.link() {
            Some(link) => link.control_upstream(message),
            None => ControlReply::Unsupported,
        }
    }
}
