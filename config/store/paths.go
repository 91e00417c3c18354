package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Names of the files under the state root. Each VM has a runtime directory
// (Paths.RuntimeDir) holding the files of a running QEMU, and a log directory
// (Paths.LogDir) whose files outlive it. The vm package creates, reads and
// removes them; this package only names them.
const (
	// DefinitionExt ends the name of every definition file: a VM named
	// "web" is defined by vms/web.toml.
	DefinitionExt = ".toml"

	// StoreLockName is the file in the config directory that Store holds
	// an exclusive flock(2) on while it assigns an ID or writes or removes
	// a definition.
	StoreLockName = "store.lock"

	// LastIDName is the file in the config directory recording the
	// highest ID ever assigned, as a decimal number and a newline, so that
	// IDs keep increasing even after the VM holding the highest one is
	// removed.
	LastIDName = "last-id"

	// QMPSocketName is the QMP monitor's unix socket, for short-lived
	// clients: connect, ask, disconnect.
	QMPSocketName = "qmp.sock"

	// EventsSocketName is a second QMP monitor, for a long-lived client
	// that follows events, so that it never holds the only monitor (QEMU
	// serves one client per QMP socket).
	EventsSocketName = "events.sock"

	// PIDFileName is QEMU's pidfile (-pidfile): the PID in decimal.
	PIDFileName = "qemu.pid"

	// LockFileName is flocked while a VM is being started, so that two
	// vmtui processes never start the same VM twice.
	LockFileName = "lock"

	// ConsoleLockName is flocked by the interactive console session
	// attached to the VM (package console says what it holds).
	ConsoleLockName = "console.lock"

	// PTYFileName records the path of the serial console's pty
	// (/dev/pts/N), as QEMU reported it.
	PTYFileName = "pty"

	// BootIDFileName records the host's boot ID
	// (/proc/sys/kernel/random/boot_id) at the time QEMU was started: a
	// runtime directory from before the last boot is stale.
	BootIDFileName = "boot-id"

	// SerialLogName, in the log directory, is everything the guest wrote
	// on its serial port (QEMU's chardev logfile).
	SerialLogName = "serial.log"

	// QEMULogName, in the log directory, is QEMU's own standard error:
	// the text to show when QEMU fails to start.
	QEMULogName = "qemu.log"
)

// SocketPathMax is the longest path a unix socket can be bound to: sun_path
// holds 108 bytes, the terminating NUL included.
const SocketPathMax = 107

// Paths locates vmtui's state. Build it with DefaultPaths (from the
// environment) or HomePaths (everything under one directory).
//
// With $VMTUI_HOME set, the layout is
//
//	$VMTUI_HOME/store.lock        StoreLockName
//	$VMTUI_HOME/last-id           LastIDName
//	$VMTUI_HOME/vms/NAME.toml     definitions
//	$VMTUI_HOME/log/NAME/         serial.log, qemu.log
//	$VMTUI_HOME/disks/NAME/       an instance's disks (InstanceDisksDir)
//	$VMTUI_HOME/templates/NAME/   a saved template's state for instant clones (TemplateCloneDir)
//	$VMTUI_HOME/saved/NAME        a saved VM's state (SavedStateFile)
//	$VMTUI_HOME/run/NAME/         qmp.sock, events.sock, qemu.pid, lock, pty, boot-id
//
// otherwise the same files are spread over the XDG base directories:
// $XDG_CONFIG_HOME/vmtui (default ~/.config/vmtui) holds store.lock,
// last-id and vms/; $XDG_STATE_HOME/vmtui (default ~/.local/state/vmtui)
// holds log/, disks/, templates/ and saved/; and $XDG_RUNTIME_DIR/vmtui holds the runtime directories. When
// $XDG_RUNTIME_DIR is not set they go to run/ under the state directory,
// which survives a reboot: the vm package recognises such leftovers by the
// boot ID it recorded (BootIDFileName).
//
// Directories are created with mode 0700.
type Paths struct {
	// ConfigDir holds the definitions (in vms/), the store lock and the
	// ID counter.
	ConfigDir string
	// StateDir holds the logs (in log/).
	StateDir string
	// RunDir holds one runtime directory per VM.
	RunDir string
	// SocketFallbackDir holds the sockets whose natural path would be too
	// long to bind (see SocketPath). DefaultPaths and HomePaths set it to
	// /tmp/vmtui-UID.
	SocketFallbackDir string
}

// HomePaths returns the layout with all state under root, as used when
// $VMTUI_HOME is set. root should be absolute.
func HomePaths(root string) *Paths {
	return &Paths{
		ConfigDir:         root,
		StateDir:          root,
		RunDir:            filepath.Join(root, "run"),
		SocketFallbackDir: defaultSocketFallbackDir(),
	}
}

// DefaultPaths returns the layout the environment asks for: HomePaths of
// $VMTUI_HOME when it is set (made absolute), the XDG base directories
// otherwise. As the XDG specification says, an XDG variable holding a
// relative path is ignored.
func DefaultPaths() (*Paths, error) {
	if home := os.Getenv("VMTUI_HOME"); home != "" {
		abs, err := filepath.Abs(home)
		if err != nil {
			return nil, fmt.Errorf("resolve $VMTUI_HOME %q: %w", home, err)
		}
		return HomePaths(abs), nil
	}
	xdg := func(env, def string) (string, error) {
		if dir := os.Getenv(env); filepath.IsAbs(dir) {
			return dir, nil
		}
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the %s directory: $%s is not set and %w", def, env, err)
		}
		return filepath.Join(home, def), nil
	}
	configHome, err := xdg("XDG_CONFIG_HOME", ".config")
	if err != nil {
		return nil, err
	}
	stateHome, err := xdg("XDG_STATE_HOME", filepath.Join(".local", "state"))
	if err != nil {
		return nil, err
	}
	p := &Paths{
		ConfigDir:         filepath.Join(configHome, "vmtui"),
		StateDir:          filepath.Join(stateHome, "vmtui"),
		SocketFallbackDir: defaultSocketFallbackDir(),
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(dir) {
		p.RunDir = filepath.Join(dir, "vmtui")
	} else {
		p.RunDir = filepath.Join(p.StateDir, "run")
	}
	return p, nil
}

func defaultSocketFallbackDir() string {
	return "/tmp/vmtui-" + strconv.Itoa(os.Getuid())
}

// VMsDir is the directory of the definition files.
func (p *Paths) VMsDir() string { return filepath.Join(p.ConfigDir, "vms") }

// DefinitionFile is the definition file of the VM called name.
func (p *Paths) DefinitionFile(name string) string {
	return filepath.Join(p.VMsDir(), name+DefinitionExt)
}

// StoreLockFile is the file Store flocks around its changes.
func (p *Paths) StoreLockFile() string { return filepath.Join(p.ConfigDir, StoreLockName) }

// LastIDFile is the file recording the highest ID ever assigned.
func (p *Paths) LastIDFile() string { return filepath.Join(p.ConfigDir, LastIDName) }

// LogDir is the directory of the VM's logs.
func (p *Paths) LogDir(name string) string { return filepath.Join(p.StateDir, "log", name) }

// SerialLog is the log of the VM's serial port.
func (p *Paths) SerialLog(name string) string { return filepath.Join(p.LogDir(name), SerialLogName) }

// QEMULog is the log of QEMU's standard error.
func (p *Paths) QEMULog(name string) string { return filepath.Join(p.LogDir(name), QEMULogName) }

// InstanceDisksDir is the directory of the disk images vmtui made for the
// instance called name (qcow2 overlays on its template's disks): under the
// state directory, as disks/NAME. Removing the instance removes it.
func (p *Paths) InstanceDisksDir(name string) string {
	return filepath.Join(p.StateDir, "disks", name)
}

// TemplateCloneDir is the directory of the saved state that the instances
// of the saved template called name resume (its RAM in a file they map
// copy-on-write, and its device state): under the state directory, as
// templates/NAME.
func (p *Paths) TemplateCloneDir(name string) string {
	return filepath.Join(p.StateDir, "templates", name)
}

// SavedStateFile is the saved state of the VM called name (vmtui save):
// its definition, RAM and devices in a vm stream, under the state
// directory, as saved/NAME. Starting the VM resumes it from there, then
// removes it.
func (p *Paths) SavedStateFile(name string) string {
	return filepath.Join(p.StateDir, "saved", name)
}

// RuntimeDir is the directory of the running VM's files.
func (p *Paths) RuntimeDir(name string) string { return filepath.Join(p.RunDir, name) }

// RuntimeFile is the file called file in the VM's runtime directory; prefer
// the named methods (PIDFile, ...) for the files this package defines.
func (p *Paths) RuntimeFile(name, file string) string {
	return filepath.Join(p.RuntimeDir(name), file)
}

// PIDFile is QEMU's pidfile.
func (p *Paths) PIDFile(name string) string { return p.RuntimeFile(name, PIDFileName) }

// LockFile is the file locked while the VM is started.
func (p *Paths) LockFile(name string) string { return p.RuntimeFile(name, LockFileName) }

// ConsoleLockFile is the lock of VM name's interactive console.
func (p *Paths) ConsoleLockFile(name string) string { return p.RuntimeFile(name, ConsoleLockName) }

// PTYFile records the serial console's pty.
func (p *Paths) PTYFile(name string) string { return p.RuntimeFile(name, PTYFileName) }

// BootIDFile records the host's boot ID at start.
func (p *Paths) BootIDFile(name string) string { return p.RuntimeFile(name, BootIDFileName) }

// QMPSocket is the path to bind and dial the VM's QMP socket at: the
// natural path in the runtime directory, or its replacement when that is too
// long (see SocketPath).
func (p *Paths) QMPSocket(name string) (string, error) {
	return p.SocketPath(p.RuntimeFile(name, QMPSocketName))
}

// EventsSocket is the path of the VM's second QMP socket, as QMPSocket.
func (p *Paths) EventsSocket(name string) (string, error) {
	return p.SocketPath(p.RuntimeFile(name, EventsSocketName))
}

// EnsureRuntimeDir creates the VM's runtime directory (mode 0700, parents
// included) if it does not exist, and returns it.
func (p *Paths) EnsureRuntimeDir(name string) (string, error) {
	dir := p.RuntimeDir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create runtime directory: %w", err)
	}
	return dir, nil
}

// EnsureLogDir creates the VM's log directory (mode 0700, parents included)
// if it does not exist, and returns it.
func (p *Paths) EnsureLogDir(name string) (string, error) {
	dir := p.LogDir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create log directory: %w", err)
	}
	return dir, nil
}

// SocketPath returns a path a unix socket meant to live at path can be bound
// to. When path fits the limit (SocketPathMax bytes) it is returned as is.
// Otherwise the socket goes to SocketFallbackDir, named by the first 16 hex
// digits of the SHA-256 of path and, unless it is over 32 bytes, path's base
// name (for example /tmp/vmtui-1000/3f2a9c0d4e5b6a7c-qmp.sock): the name is a function of path
// alone, so every vmtui process finds the same socket, and the directory is
// short and per user. SocketPath creates that directory (mode 0700) if
// needed, and refuses it unless it is a real directory owned by the current
// user that no one else can enter, since another user could otherwise
// intercept the monitor. The error names the path and the limit when even
// the fallback is too long.
func (p *Paths) SocketPath(path string) (string, error) {
	if len(path) <= SocketPathMax {
		return path, nil
	}
	sum := sha256.Sum256([]byte(path))
	name := hex.EncodeToString(sum[:8])
	if base := filepath.Base(path); len(base) <= 32 {
		name += "-" + base
	}
	short := filepath.Join(p.SocketFallbackDir, name)
	if len(short) > SocketPathMax {
		return "", fmt.Errorf("socket path %q is %d bytes, over the limit of %d, and so is its replacement %q; use a shorter $VMTUI_HOME or $XDG_RUNTIME_DIR",
			path, len(path), SocketPathMax, short)
	}
	if err := ensurePrivateDir(p.SocketFallbackDir); err != nil {
		return "", fmt.Errorf("socket path %q is %d bytes, over the limit of %d: %w", path, len(path), SocketPathMax, err)
	}
	return short, nil
}

// ensurePrivateDir makes sure dir is a directory (not a symbolic link)
// owned by the current user with no permissions for group or others,
// creating it if it does not exist.
func ensurePrivateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %q: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("refusing to use %q: not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("refusing to use %q: cannot read its owner", dir)
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return fmt.Errorf("refusing to use %q: owned by uid %d, not %d", dir, st.Uid, uid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("refusing to use %q: mode %#o lets other users in (want 0700)", dir, perm)
	}
	return nil
}
