package vm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/vm/qmp"
)

// Following running VMs through QEMU's events, so that a program showing
// them (the TUI) learns of a pause, a resume or an exit when it happens
// instead of asking every VM every second.
//
// Each VM's QEMU serves a second QMP socket for this (store.Paths'
// EventsSocket), and QEMU serves one client per socket: while a Watcher
// follows a VM, no other process can. A second Watcher on the same VM (a
// second TUI) finds the socket busy, reports WatchBusy, and tries again
// now and then; its user falls back to asking that VM (Manager.Status) on
// a timer until WatchConnected comes.

// WatchKind is what a watched VM did, or what became of its watch.
type WatchKind int

const (
	// WatchConnected: the watch is connected; the VM's state may have
	// changed since it was last read (events while no watch was connected
	// are lost), so read it again. Every event after this one is
	// delivered.
	WatchConnected WatchKind = iota
	// WatchBusy: another client holds the VM's events socket (another
	// vmtui's watch): no events come until WatchConnected; ask the VM
	// for its state instead. Err says more.
	WatchBusy
	// WatchStop: the guest was paused (QMP STOP).
	WatchStop
	// WatchResume: the guest was resumed (QMP RESUME).
	WatchResume
	// WatchPowerdown: the ACPI power button was pressed (QMP POWERDOWN).
	WatchPowerdown
	// WatchShutdown: the guest powered off or QEMU is quitting (QMP
	// SHUTDOWN); Reason says why. WatchExit follows when QEMU exits.
	WatchShutdown
	// WatchReset: the machine was reset (QMP RESET).
	WatchReset
	// WatchSuspend and WatchWakeup: the guest entered or left S3.
	WatchSuspend
	WatchWakeup
	// WatchPanicked: the guest panicked (QMP GUEST_PANICKED).
	WatchPanicked
	// WatchExit: QEMU has exited (its events socket closed and the
	// process is gone). The watch ends; Watch the VM again once it runs.
	WatchExit
	// WatchLost: the watch ended without QEMU exiting: the socket
	// closed, or could not be dialed, and the process still runs. Err
	// says why. Read the VM's state and Watch it again.
	WatchLost
)

var watchKindNames = [...]string{"connected", "busy", "stop", "resume", "powerdown", "shutdown", "reset", "suspend", "wakeup", "panicked", "exit", "lost"}

func (k WatchKind) String() string {
	if k >= 0 && int(k) < len(watchKindNames) {
		return watchKindNames[k]
	}
	return fmt.Sprintf("WatchKind(%d)", int(k))
}

// watchEvents maps the QMP events a watch follows to their kinds.
var watchEvents = map[string]WatchKind{
	qmp.EventStop:          WatchStop,
	qmp.EventResume:        WatchResume,
	qmp.EventPowerdown:     WatchPowerdown,
	qmp.EventShutdown:      WatchShutdown,
	qmp.EventReset:         WatchReset,
	qmp.EventSuspend:       WatchSuspend,
	qmp.EventWakeup:        WatchWakeup,
	qmp.EventGuestPanicked: WatchPanicked,
}

// WatchEvent is something that happened to a watched VM.
type WatchEvent struct {
	// VM is the VM's name.
	VM   string
	Kind WatchKind
	// Reason is QEMU's reason for a WatchShutdown or WatchReset
	// ("guest-shutdown", "host-qmp-quit", ...).
	Reason string
	// Err says why a watch is busy or lost.
	Err error
}

// Timing of watches.
const (
	// watchDialTimeout bounds the wait for the events socket's greeting:
	// past it, another client holds the socket.
	watchDialTimeout = 2 * time.Second
	// watchRetry is how long a busy or lost watch waits before it dials
	// again, at first and at most.
	watchRetry, watchMaxRetry = 5 * time.Second, 30 * time.Second
	// watchExitWait bounds the wait, after the events socket closed,
	// for QEMU's process to be gone.
	watchExitWait = 10 * time.Second
)

// Watcher follows the events of the running VMs it is given (Watch), each
// over its events socket, and delivers them on one channel. Its methods are
// safe to call concurrently.
type Watcher struct {
	m      *Manager
	ctx    context.Context
	cancel context.CancelFunc
	events chan WatchEvent
	wg     sync.WaitGroup

	mu      sync.Mutex
	watches map[string]*watch // by VM name
}

// watch is the goroutine following one VM's QEMU.
type watch struct {
	pid       int
	startTime uint64
}

// NewWatcher returns a Watcher of the VMs of m; it follows none until
// Watch. Close it when done: it holds a connection per VM.
func (m *Manager) NewWatcher() *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &Watcher{m: m, ctx: ctx, cancel: cancel, events: make(chan WatchEvent, 64), watches: make(map[string]*watch)}
}

// Events returns the channel events are delivered on. It is never closed;
// the goroutines sending on it wait for it to be read (or for Close).
func (w *Watcher) Events() <-chan WatchEvent { return w.events }

// Watch starts following the QEMU of st, a running VM's status (as List
// or Status return it). It does nothing when st is not running, or when
// that QEMU is followed already; a VM started again since its last watch
// ended is followed anew. The first event is WatchConnected or WatchBusy,
// the last WatchExit (or WatchLost).
func (w *Watcher) Watch(st Status) {
	if !st.Running() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil {
		return
	}
	if cur, ok := w.watches[st.Name]; ok && cur.pid == st.PID {
		return
	}
	wt := &watch{pid: st.PID, startTime: st.startTime}
	w.watches[st.Name] = wt
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.follow(st.Name, wt)
		w.mu.Lock()
		if w.watches[st.Name] == wt {
			delete(w.watches, st.Name)
		}
		w.mu.Unlock()
	}()
}

// Watching reports whether VM name is being followed (connected or
// trying to).
func (w *Watcher) Watching(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.watches[name]
	return ok
}

// Close ends every watch, closing their connections, and waits for them.
func (w *Watcher) Close() error {
	w.cancel()
	w.wg.Wait()
	return nil
}

// send delivers ev unless the Watcher is closed.
func (w *Watcher) send(ev WatchEvent) bool {
	select {
	case w.events <- ev:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// follow follows VM name's QEMU wt until it exits or the Watcher closes.
func (w *Watcher) follow(name string, wt *watch) {
	st := Status{Name: name, PID: wt.pid, startTime: wt.startTime}
	path, err := w.m.paths.EventsSocket(name)
	if err != nil {
		w.send(WatchEvent{VM: name, Kind: WatchLost, Err: err})
		return
	}
	retry := watchRetry
	busy := false
	for {
		ps, err := st.Sample()
		if errors.Is(err, ErrNotRunning) {
			w.send(WatchEvent{VM: name, Kind: WatchExit})
			return
		}
		if err == nil && ps.Stopped() {
			// A stopped QEMU (SIGSTOP) greets no one: that is not a
			// busy socket. Its user sees the state in /proc.
			if !w.sleep(retry) {
				return
			}
			continue
		}
		dctx, cancel := context.WithTimeout(w.ctx, watchDialTimeout)
		c, err := qmp.Dial(dctx, path)
		cancel()
		switch {
		case w.ctx.Err() != nil:
			if c != nil {
				c.Close()
			}
			return
		case errors.Is(err, qmp.ErrBusy):
			if !busy && !w.send(WatchEvent{VM: name, Kind: WatchBusy, Err: fmt.Errorf("watch vm %s: %w", name, err)}) {
				return
			}
			busy = true
		case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
			// The socket is gone: QEMU is exiting, or the runtime
			// files were removed under a running QEMU.
			if w.waitExit(st) {
				w.send(WatchEvent{VM: name, Kind: WatchExit})
			} else {
				w.send(WatchEvent{VM: name, Kind: WatchLost, Err: fmt.Errorf("watch vm %s: %w", name, err)})
			}
			return
		case err != nil:
			if !w.send(WatchEvent{VM: name, Kind: WatchLost, Err: fmt.Errorf("watch vm %s: %w", name, err)}) {
				return
			}
		default:
			busy = false
			retry = watchRetry
			if !w.serve(name, c) {
				return
			}
			if w.waitExit(st) {
				w.send(WatchEvent{VM: name, Kind: WatchExit})
				return
			}
			// QEMU runs but dropped the watch: say so, and dial again.
			if !w.send(WatchEvent{VM: name, Kind: WatchLost, Err: fmt.Errorf("watch vm %s: the events socket closed", name)}) {
				return
			}
		}
		if !w.sleep(retry) {
			return
		}
		retry = min(2*retry, watchMaxRetry)
	}
}

// sleep waits d; it reports false when the Watcher was closed first.
func (w *Watcher) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serve delivers the events of connection c until it ends; it reports
// false when the Watcher was closed.
func (w *Watcher) serve(name string, c *qmp.Client) bool {
	defer c.Close()
	stop := context.AfterFunc(w.ctx, func() { c.Close() })
	defer stop()
	names := make([]string, 0, len(watchEvents))
	for n := range watchEvents {
		names = append(names, n)
	}
	sub := c.Subscribe(16, names...)
	defer sub.Close()
	// Subscribed first: whatever happens after the reader reads the
	// state again is delivered.
	if !w.send(WatchEvent{VM: name, Kind: WatchConnected}) {
		return false
	}
	for ev := range sub.C {
		out := WatchEvent{VM: name, Kind: watchEvents[ev.Name]}
		if ev.Name == qmp.EventShutdown || ev.Name == qmp.EventReset {
			var info qmp.ShutdownInfo
			if ev.DecodeData(&info) == nil {
				out.Reason = info.Reason
			}
		}
		if !w.send(out) {
			return false
		}
	}
	return w.ctx.Err() == nil
}

// waitExit waits, for a while, until the QEMU of st has exited: a QEMU
// closes its monitors as it exits, a moment before the process is gone.
func (w *Watcher) waitExit(st Status) bool {
	deadline := time.Now().Add(watchExitWait)
	delay := time.Millisecond
	for {
		if _, err := st.Sample(); errors.Is(err, ErrNotRunning) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		t := time.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}
