package vm

// Send and Receive, as vmctl's send and receive: a running VM's definition
// and state out to a writer in a vm stream (package stream), its QEMU then
// quitting; and a VM defined and started from such a stream. Save
// (save.go) writes the same stream into the VM's state directory.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/vm/qmp"
	"github.com/vmtui/vmtui/vm/stream"
)

// SendOptions modify Send and Save.
type SendOptions struct {
	// Progress, when set, is called now and then, and once at the end,
	// with the bytes of stream written so far.
	Progress func(written int64)
}

// ReceiveOptions modify Receive.
type ReceiveOptions struct {
	// Progress, when set, is called now and then, and once at the end,
	// with the bytes of stream read so far.
	Progress func(read int64)
}

// progressInterval is how often Progress is called at most.
const progressInterval = 200 * time.Millisecond

// progress counts bytes and reports them through fn at most every
// progressInterval.
type progress struct {
	fn   func(int64)
	n    atomic.Int64
	last time.Time
}

func (p *progress) add(n int) {
	total := p.n.Add(int64(n))
	if p.fn != nil && time.Since(p.last) >= progressInterval {
		p.last = time.Now()
		p.fn(total)
	}
}

func (p *progress) end() {
	if p.fn != nil {
		p.fn(p.n.Load())
	}
}

type progressWriter struct {
	w io.Writer
	p *progress
}

func (w progressWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	w.p.add(n)
	return n, err
}

type progressReader struct {
	r io.Reader
	p *progress
}

func (r progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.add(n)
	return n, err
}

// Send pauses the running (or paused) VM def, writes its definition and
// state (RAM and devices; not its disks) to w as a vm stream, and quits its
// QEMU: the VM is then stopped, its definition kept. When writing fails (a
// closed pipe, a full disk) the migration is cancelled and the VM goes on
// as it was, running or paused: the error says so. A VM that is not
// running gives ErrNotRunning. The VM's lock is held throughout, as Start
// holds it.
func (m *Manager) Send(ctx context.Context, def *config.VM, w io.Writer, opts SendOptions) error {
	return m.suspend(ctx, def, "send vm "+def.Name, opts, func(write func(io.Writer) error) error {
		return write(w)
	})
}

// suspend is Send and Save: it takes the VM's lock, pauses the guest, and
// calls sink with a function that writes the VM's stream to the writer it
// is given; once sink succeeded, QEMU quits. When sink fails, the guest
// goes on as it was. what prefixes errors.
func (m *Manager) suspend(ctx context.Context, def *config.VM, what string, opts SendOptions, sink func(write func(io.Writer) error) error) error {
	if err := config.ValidName(def.Name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := m.paths.EnsureRuntimeDir(def.Name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	lctx, cancel := context.WithTimeout(ctx, startTimeout+forceGrace)
	lock, err := store.Lock(lctx, m.paths.LockFile(def.Name))
	cancel()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer lock.Unlock()
	cur, err := m.reread(def)
	var nf *store.NotFoundError
	switch {
	case errors.As(err, &nf):
		return err
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	}
	st := m.inspectLocked(ctx, cur, &scan{})
	switch {
	case !st.Running():
		return ErrNotRunning
	case st.State != StateRunning && st.State != StatePaused:
		msg := fmt.Sprintf("vm is %s", st.State)
		if st.Err != "" {
			msg += ": " + st.Err
		}
		return fmt.Errorf("%s: %s", what, msg)
	case len(st.Attached) > 0:
		return fmt.Errorf("%s: disks are attached to it while it runs (%q): the state of a vm started again "+
			"from its definition would not match; detach them first", what, st.Attached)
	}
	if err := checkSavable(cur); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	data, err := config.Encode(cur)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	marker := m.paths.RuntimeFile(cur.Name, migratingFileName)
	if err := os.WriteFile(marker, []byte(what), 0o600); err != nil { // what it is: lockHolder
		return fmt.Errorf("%s: %w", what, err)
	}
	defer os.Remove(marker)

	// Pause first: the stream is then one instant of the guest, sent in
	// one pass, as vmctl sends it.
	running := false
	err = m.withQMP(ctx, cur.Name, func(c *qmp.Client) error {
		qs, err := c.QueryStatus(ctx)
		if err != nil {
			return err
		}
		if running = qs.Status == qmp.StateRunning; running {
			return c.Stop(ctx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: pause: %w", what, err)
	}
	h := stream.Header{Definition: data}
	if running {
		h.Flags |= stream.FlagRunning
	}
	p := &progress{fn: opts.Progress}
	mctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	err = sink(func(w io.Writer) error {
		sw, err := stream.NewWriter(errWriter{progressWriter{w, p}}, h)
		if err != nil {
			return err
		}
		if err := m.migrateOut(mctx, cur.Name, st.PID, sw, nil); err != nil {
			sw.Abort()
			return err
		}
		return sw.Close()
	})
	p.end()
	if err != nil {
		// Not lost: the migration was cancelled (or completed, and QEMU
		// takes cont after it too).
		return fmt.Errorf("%s: %w; %s", what, err, m.carryOn(ctx, cur.Name, running))
	}
	// The state is out: QEMU quits, as Stop -f quits it.
	qctx := context.WithoutCancel(ctx)
	if err := m.withQMP(qctx, cur.Name, func(c *qmp.Client) error { return c.Quit(qctx) }); err != nil {
		m.signal(cur.Name, st, syscall.SIGTERM)
	}
	gctx, cancel := context.WithTimeout(qctx, forceGrace)
	err = m.waitExit(gctx, cur.Name, st.PID)
	cancel()
	if err != nil {
		m.signal(cur.Name, st, syscall.SIGKILL)
		m.waitExit(qctx, cur.Name, st.PID)
	}
	m.cleanup(cur.Name)
	return nil
}

// carryOn resumes a guest that was running before a send or save failed,
// and says how the VM is left.
func (m *Manager) carryOn(ctx context.Context, name string, running bool) string {
	if !running {
		return "the vm stays paused, as it was"
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
	defer cancel()
	if err := m.withQMP(ctx, name, func(c *qmp.Client) error { return c.Cont(ctx) }); err != nil {
		return fmt.Sprintf("the vm is left paused: resuming it failed: %v (vmtui unpause %s)", err, name)
	}
	return "the vm goes on running"
}

// Receive defines a VM called name from the vm stream r (as Send and Save
// write it) and starts it from the state the stream holds: the guest goes
// on where it was, running, or paused if it was paused. The definition is
// the stream's, with a new ID; its disks must be at the same paths, and a
// missing one is refused before anything starts. A damaged stream (an error
// wrapping stream.ErrFormat) or any other failure leaves nothing defined
// and no QEMU running. The VM's lock is held throughout.
func (m *Manager) Receive(ctx context.Context, name string, r io.Reader, opts ReceiveOptions) (Status, error) {
	what := "receive vm " + name
	if err := config.ValidName(name); err != nil {
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	if config.IsID(name) {
		return Status{}, fmt.Errorf("%s: a name cannot be all digits: it would be read as an id", what)
	}
	p := &progress{fn: opts.Progress}
	defer p.end()
	sr, err := stream.NewReader(progressReader{r, p})
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	data := sr.Header().Definition
	def := &config.VM{Name: config.NameOf(data), File: "the stream's definition"}
	if err := config.Decode(def, data); err != nil {
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	// vmctl's rule: the disks are where they were.
	for _, d := range def.Disks {
		if _, err := os.Stat(d.Path); err != nil {
			return Status{}, fmt.Errorf("%s: disk %q of the stream's definition: %w (the disk images must be at the same paths: copy them first)",
				what, d.Path, disk.PathCause(err))
		}
	}
	// An instance of a template is received as a VM of its own: its
	// disks are where they were, and the template may be elsewhere.
	def.Name, def.ID, def.File, def.Template = name, 0, "", ""

	if _, err := m.paths.EnsureRuntimeDir(name); err != nil {
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	if _, err := m.paths.EnsureLogDir(name); err != nil {
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	lctx, cancel := context.WithTimeout(ctx, startTimeout+forceGrace)
	lock, err := store.Lock(lctx, m.paths.LockFile(name))
	cancel()
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	defer lock.Unlock()
	if err := m.store.Create(def); err != nil {
		if errors.Is(err, store.ErrExists) {
			return Status{}, fmt.Errorf("%s: a vm called %s is defined already", what, name)
		}
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	st, err := m.startLocked(ctx, def, StartOptions{Incoming: &Incoming{Stream: sr, Resume: sr.Header().Running()}})
	if err != nil {
		// Nothing defined: the definition made above goes.
		if rerr := m.store.Remove(name); rerr != nil {
			return Status{}, fmt.Errorf("%s: %w (and removing its definition: %v)", what, err, rerr)
		}
		return Status{}, fmt.Errorf("%s: %w", what, err)
	}
	return st, nil
}
