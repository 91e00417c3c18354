package vm

// Migration: a running VM's state (RAM and devices, not its disks) out of
// its QEMU into a writer, and into a new QEMU from a reader, through QEMU's
// own migration over a unix socket in the VM's runtime directory: no shell,
// no file descriptors passed. Going out, vmtui listens and QEMU connects
// (migrate unix:PATH); coming in, QEMU, started with -incoming defer,
// listens (migrate-incoming unix:PATH) and vmtui connects. Send, Save,
// Receive and the resume of a saved VM (save.go) are built on
// migrateOut and migrateIn; so may anything else that moves a guest's
// state, with other migration capabilities.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmtui/vmtui/internal/seriallog"
	"github.com/vmtui/vmtui/vm/qmp"
)

const (
	// migrateSocketName is the unix socket of a migration, in the VM's
	// runtime directory.
	migrateSocketName = "migrate.sock"
	// migratingFileName marks a VM whose state is being sent or saved,
	// while its lock is held: queries then ask its QEMU without waiting
	// for the lock (see inspect).
	migratingFileName = "migrating"
)

// Timeouts of a migration.
const (
	// streamTimeout bounds a whole send, save or receive: a large guest to a slow disk
	// or network.
	streamTimeout = 6 * time.Hour
	// migrateConnectTimeout bounds the wait for QEMU to connect to
	// vmtui's socket, or to listen on its own.
	migrateConnectTimeout = 30 * time.Second
	// migrateSettleTimeout bounds the wait for QEMU to say a migration
	// ended once its stream has.
	migrateSettleTimeout = 60 * time.Second
	// migratePoll is how often query-migrate is asked while waiting.
	migratePoll = 10 * time.Millisecond
)

// maxBandwidth is the migration bandwidth vmtui sets (bytes/s): QEMU 7.2
// limits a migration to 32 MiB/s by default, for live migrations that must
// not starve the guest. vmtui's guest is paused, and the limit would make a
// guest of 100 MiB take 3 s; 1 TiB/s is no limit.
const maxBandwidth = 1 << 40

// MigrationCaps are QEMU migration capabilities (migrate-set-capabilities)
// to turn on or off for one migration, by name: "x-ignore-shared", say. The
// source and the destination must be given the same.
type MigrationCaps map[string]bool

// Incoming is a migration stream a VM starts from instead of booting
// (StartOptions.Incoming): QEMU starts with -incoming defer and its vCPUs
// stopped, loads the stream, and runs the guest only once the stream has
// been read whole without error.
type Incoming struct {
	// Stream is QEMU's migration stream. A read error (a damaged vm
	// stream: see package stream) fails the start, and the QEMU is killed.
	Stream io.Reader
	// Caps are the migration capabilities the stream was written with.
	Caps MigrationCaps
	// Resume runs the guest once its state is loaded; else it stays
	// paused.
	Resume bool
	// Done, when set, is called once the guest has its state (and runs,
	// with Resume).
	Done func()
}

// migrationInfo is what query-migrate says.
type migrationInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// ended reports whether a migration in this status is over.
func (i migrationInfo) ended() bool {
	switch i.Status {
	case "", "none", "completed", "failed", "cancelled":
		return true
	}
	return false
}

// err is the error of a migration that ended other than completed.
func (i migrationInfo) err() error {
	switch {
	case i.Status == "completed":
		return nil
	case i.ErrorDesc != "":
		return fmt.Errorf("qemu's migration %s: %s", i.Status, i.ErrorDesc)
	}
	return fmt.Errorf("qemu's migration %s", i.Status)
}

// setCaps sets the migration capabilities caps (in name order).
func setCaps(ctx context.Context, c *qmp.Client, caps MigrationCaps) error {
	if len(caps) == 0 {
		return nil
	}
	type cap struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	var list []cap
	for name, on := range caps {
		list = append(list, cap{name, on})
	}
	slices.SortFunc(list, func(a, b cap) int { return strings.Compare(a.Capability, b.Capability) })
	return c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": list}, nil)
}

// migrateSocket returns the path of the VM's migration socket, removing
// what a vmtui that was killed left there.
func (m *Manager) migrateSocket(name string) (string, error) {
	path, err := m.paths.SocketPath(m.paths.RuntimeFile(name, migrateSocketName))
	if err != nil {
		return "", err
	}
	os.Remove(path)
	return path, nil
}

// migrationStatus asks the VM's QEMU how its migration goes.
func (m *Manager) migrationStatus(ctx context.Context, name string) (migrationInfo, error) {
	var info migrationInfo
	err := m.withQMP(ctx, name, func(c *qmp.Client) error { return c.Execute(ctx, "query-migrate", nil, &info) })
	return info, err
}

// waitMigrationEnd waits until the VM's migration has ended, asking its QEMU
// (a connection at a time, so that status queries get through), and
// returns how it ended.
func (m *Manager) waitMigrationEnd(ctx context.Context, name string, exited <-chan struct{}) (migrationInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, migrateSettleTimeout)
	defer cancel()
	for {
		info, err := m.migrationStatus(ctx, name)
		if err == nil && info.ended() {
			return info, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("qemu's migration still %s", info.Status)
			}
			return info, fmt.Errorf("wait for the migration to end: %w", err)
		case <-exited:
			return info, errExited
		case <-time.After(migratePoll):
		}
	}
}

// cancelMigration cancels the VM's outgoing migration, if it has not
// ended, and waits until it has. It goes on when ctx is canceled: the
// cancel is what makes the VM usable again.
func (m *Manager) cancelMigration(ctx context.Context, name string) error {
	ctx = context.WithoutCancel(ctx)
	err := m.withQMP(ctx, name, func(c *qmp.Client) error { return c.Execute(ctx, "migrate_cancel", nil, nil) })
	if err != nil {
		return fmt.Errorf("cancel the migration: %w", err)
	}
	_, err = m.waitMigrationEnd(ctx, name, nil)
	return err
}

// writeError marks an error of the writer a migration goes to, to tell it
// from QEMU's.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write the stream: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// errWriter tags the errors of w as writeErrors.
type errWriter struct{ w io.Writer }

func (e errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	var we *writeError
	if err != nil && !errors.As(err, &we) {
		err = &writeError{err}
	}
	return n, err
}

// migrateOut migrates the state of VM name, whose QEMU is process pid, to
// w, with the capabilities caps and no bandwidth limit: it listens on the
// VM's migration socket, has QEMU connect to it (QMP migrate), copies what
// QEMU sends to w until QEMU ends the stream, and checks that QEMU says
// the migration completed. When anything fails, w included (its errors
// wrap *writeError), the migration is cancelled before migrateOut returns:
// QEMU then goes on as it was before (a paused guest stays paused). It
// neither pauses nor resumes the guest, nor quits QEMU.
func (m *Manager) migrateOut(ctx context.Context, name string, pid int, w io.Writer, caps MigrationCaps) error {
	path, err := m.migrateSocket(name)
	if err != nil {
		return err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %q: %w", path, err)
	}
	defer l.Close() // and removes the socket
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("listen on %q: %w", path, err)
	}
	err = m.withQMP(ctx, name, func(c *qmp.Client) error {
		if err := setCaps(ctx, c, caps); err != nil {
			return err
		}
		if err := c.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxBandwidth}, nil); err != nil {
			return err
		}
		return c.Execute(ctx, "migrate", map[string]any{"uri": "unix:" + path}, nil)
	})
	if err != nil {
		// migrate may have been sent, and failed only to answer.
		m.cancelMigration(ctx, name)
		return err
	}
	conn, err := acceptFrom(ctx, l, pid)
	if err != nil {
		return errors.Join(err, m.cancelMigration(ctx, name))
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	_, err = io.Copy(errWriter{w}, conn)
	stop()
	conn.Close()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		if cerr := m.cancelMigration(ctx, name); cerr != nil {
			return errors.Join(err, cerr)
		}
		return err
	}
	info, err := m.waitMigrationEnd(ctx, name, nil)
	if err != nil {
		return errors.Join(err, m.cancelMigration(ctx, name))
	}
	return info.err()
}

// acceptFrom accepts the connection of process pid (QEMU) on l, closing
// any other.
func acceptFrom(ctx context.Context, l *net.UnixListener, pid int) (*net.UnixConn, error) {
	l.SetDeadline(time.Now().Add(migrateConnectTimeout))
	stop := context.AfterFunc(ctx, func() { l.SetDeadline(time.Now()) })
	defer stop()
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("qemu did not connect to the migration socket: %w", err)
		}
		if peerPID(conn) == pid {
			return conn, nil
		}
		conn.Close()
	}
}

// peerPID returns the PID of the process at the other end of conn, 0 if
// unknown.
func peerPID(conn *net.UnixConn) int {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// readError marks an error of the reader a migration comes from.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// errReader tags the errors of r, io.EOF aside, as readErrors.
type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// migrateIn loads in.Stream into the QEMU of VM name, process pid, which
// was started with -incoming defer and its vCPUs stopped (exited closes
// when it exits): it sets in.Caps, has QEMU listen on the VM's migration
// socket (migrate-incoming), connects, and copies the stream to it. Once
// the stream has been read whole, and so checked, and QEMU says the
// migration completed, the guest runs if in.Resume. On error the caller
// kills QEMU: the guest has not run.
func (m *Manager) migrateIn(ctx context.Context, name string, pid int, exited <-chan struct{}, in *Incoming) error {
	path, err := m.migrateSocket(name)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	qemuErr := func(err error) error {
		select {
		case <-exited:
			last, _ := seriallog.Tail(m.paths.QEMULog(name), 20)
			if msg := strings.TrimSpace(string(last)); msg != "" {
				return fmt.Errorf("qemu exited loading the state: %s", msg)
			}
			return errors.New("qemu exited loading the state")
		default:
			return err
		}
	}
	err = m.withQMP(ctx, name, func(c *qmp.Client) error {
		if err := setCaps(ctx, c, in.Caps); err != nil {
			return err
		}
		return c.Execute(ctx, "migrate-incoming", map[string]any{"uri": "unix:" + path}, nil)
	})
	if err != nil {
		return qemuErr(err)
	}
	dctx, cancel := context.WithTimeout(ctx, migrateConnectTimeout)
	conn, err := (&net.Dialer{}).DialContext(dctx, "unix", path)
	cancel()
	if err != nil {
		return qemuErr(fmt.Errorf("connect to qemu's migration socket: %w", err))
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, errReader{in.Stream})
		conn.(*net.UnixConn).CloseWrite()
		copied <- err
	}()
	select {
	case err = <-copied:
	case <-ctx.Done():
		conn.Close()
		return ctx.Err()
	}
	defer conn.Close()
	var re *readError
	if errors.As(err, &re) {
		return re.err // the stream is damaged: that is what to say
	}
	if err != nil {
		return qemuErr(fmt.Errorf("write to qemu: %w", err))
	}
	info, err := m.waitMigrationEnd(ctx, name, exited)
	if err != nil {
		return qemuErr(err)
	}
	if err := info.err(); err != nil {
		return qemuErr(err)
	}
	if in.Resume {
		if err := m.withQMP(ctx, name, func(c *qmp.Client) error { return c.Cont(ctx) }); err != nil {
			return qemuErr(fmt.Errorf("run the guest: %w", err))
		}
	}
	if in.Done != nil {
		in.Done()
	}
	return nil
}
