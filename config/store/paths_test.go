package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// setEnv sets the variables DefaultPaths reads, "" meaning unset.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range []string{"VMTUI_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "HOME"} {
		t.Setenv(k, env[k]) // restored after the test
		if env[k] == "" {
			os.Unsetenv(k)
		}
	}
}

func TestDefaultPaths(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want Paths
	}{
		{"VMTUI_HOME wins", map[string]string{"VMTUI_HOME": "/v", "XDG_CONFIG_HOME": "/x/c", "XDG_STATE_HOME": "/x/s", "XDG_RUNTIME_DIR": "/run/user/1", "HOME": "/h"},
			Paths{ConfigDir: "/v", StateDir: "/v", RunDir: "/v/run"}},
		{"VMTUI_HOME cleaned", map[string]string{"VMTUI_HOME": "/v/./w/"},
			Paths{ConfigDir: "/v/w", StateDir: "/v/w", RunDir: "/v/w/run"}},
		{"XDG", map[string]string{"XDG_CONFIG_HOME": "/x/c", "XDG_STATE_HOME": "/x/s", "XDG_RUNTIME_DIR": "/run/user/1", "HOME": "/h"},
			Paths{ConfigDir: "/x/c/vmtui", StateDir: "/x/s/vmtui", RunDir: "/run/user/1/vmtui"}},
		{"XDG defaults", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1", "HOME": "/h"},
			Paths{ConfigDir: "/h/.config/vmtui", StateDir: "/h/.local/state/vmtui", RunDir: "/run/user/1/vmtui"}},
		{"no runtime dir", map[string]string{"HOME": "/h"},
			Paths{ConfigDir: "/h/.config/vmtui", StateDir: "/h/.local/state/vmtui", RunDir: "/h/.local/state/vmtui/run"}},
		{"relative XDG ignored", map[string]string{"XDG_CONFIG_HOME": "c", "XDG_STATE_HOME": "s", "XDG_RUNTIME_DIR": "r", "HOME": "/h"},
			Paths{ConfigDir: "/h/.config/vmtui", StateDir: "/h/.local/state/vmtui", RunDir: "/h/.local/state/vmtui/run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			got, err := DefaultPaths()
			if err != nil {
				t.Fatal(err)
			}
			tt.want.SocketFallbackDir = fmt.Sprintf("/tmp/vmtui-%d", os.Getuid())
			if *got != tt.want {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestDefaultPathsRelativeHome(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	setEnv(t, map[string]string{"VMTUI_HOME": "state"})
	p, err := DefaultPaths()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state"); p.ConfigDir != want {
		t.Errorf("ConfigDir = %q, want %q", p.ConfigDir, want)
	}
}

func TestDefaultPathsNoHome(t *testing.T) {
	setEnv(t, map[string]string{"XDG_CONFIG_HOME": "/x/c"})
	_, err := DefaultPaths()
	if err == nil || !strings.Contains(err.Error(), "$XDG_STATE_HOME is not set") {
		t.Errorf("got %v, want an error saying $XDG_STATE_HOME is not set", err)
	}
}

func TestPathsFiles(t *testing.T) {
	home := HomePaths("/v")
	xdg := &Paths{ConfigDir: "/c/vmtui", StateDir: "/s/vmtui", RunDir: "/run/user/1/vmtui"}
	tests := []struct{ got, want string }{
		{home.VMsDir(), "/v/vms"},
		{home.DefinitionFile("web"), "/v/vms/web.toml"},
		{home.StoreLockFile(), "/v/store.lock"},
		{home.LastIDFile(), "/v/last-id"},
		{home.LogDir("web"), "/v/log/web"},
		{home.SerialLog("web"), "/v/log/web/serial.log"},
		{home.QEMULog("web"), "/v/log/web/qemu.log"},
		{home.RuntimeDir("web"), "/v/run/web"},
		{home.PIDFile("web"), "/v/run/web/qemu.pid"},
		{home.LockFile("web"), "/v/run/web/lock"},
		{home.PTYFile("web"), "/v/run/web/pty"},
		{home.BootIDFile("web"), "/v/run/web/boot-id"},
		{home.RuntimeFile("web", "x"), "/v/run/web/x"},
		{xdg.DefinitionFile("web"), "/c/vmtui/vms/web.toml"},
		{xdg.StoreLockFile(), "/c/vmtui/store.lock"},
		{xdg.SerialLog("web"), "/s/vmtui/log/web/serial.log"},
		{xdg.PIDFile("web"), "/run/user/1/vmtui/web/qemu.pid"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for _, f := range []func(string) (string, error){home.QMPSocket, home.EventsSocket} {
		got, err := f("web")
		if err != nil || (got != "/v/run/web/qmp.sock" && got != "/v/run/web/events.sock") {
			t.Errorf("got %q, %v, want a socket in /v/run/web", got, err)
		}
	}
}

func TestEnsureDirs(t *testing.T) {
	p := HomePaths(filepath.Join(t.TempDir(), "home"))
	for _, f := range []func(string) (string, error){p.EnsureRuntimeDir, p.EnsureLogDir} {
		dir, err := f("web")
		if err != nil {
			t.Fatal(err)
		}
		for d := dir; d != filepath.Dir(p.ConfigDir); d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm != 0o700 {
				t.Errorf("%s has mode %#o, want 0700", d, perm)
			}
		}
	}
}

func TestSocketPath(t *testing.T) {
	base := t.TempDir()
	p := &Paths{SocketFallbackDir: filepath.Join(base, "fallback")}
	long := "/" + strings.Repeat("d", 200) + "/qmp.sock"

	for _, n := range []int{10, SocketPathMax} {
		path := "/" + strings.Repeat("x", n-1)
		got, err := p.SocketPath(path)
		if err != nil || got != path {
			t.Errorf("SocketPath of %d bytes = %q, %v; want it unchanged", n, got, err)
		}
	}
	if _, err := os.Stat(p.SocketFallbackDir); !os.IsNotExist(err) {
		t.Errorf("fallback directory created for short paths: %v", err)
	}

	got, err := p.SocketPath(long)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(got) != p.SocketFallbackDir || !strings.HasSuffix(got, "-qmp.sock") || len(got) > SocketPathMax {
		t.Errorf("SocketPath(long) = %q, want a short path in %s ending in -qmp.sock", got, p.SocketFallbackDir)
	}
	if again, _ := p.SocketPath(long); again != got {
		t.Errorf("SocketPath(long) gave %q, then %q: want the same path every time", got, again)
	}
	if other, _ := p.SocketPath(strings.Replace(long, "d", "e", 1)); other == got {
		t.Errorf("two long paths share the socket %q", got)
	}
	if got108, err := p.SocketPath("/" + strings.Repeat("x", SocketPathMax)); filepath.Dir(got108) != p.SocketFallbackDir || len(filepath.Base(got108)) != 16 {
		t.Errorf("SocketPath of 108 bytes = %q, %v; want a 16-digit hash in %s", got108, err, p.SocketFallbackDir)
	}
	fi, err := os.Stat(p.SocketFallbackDir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("fallback directory: %v, %v; want mode 0700", fi.Mode(), err)
	}

	// A fallback directory that is itself too long.
	tooLong := &Paths{SocketFallbackDir: "/" + strings.Repeat("f", 100)}
	_, err = tooLong.SocketPath(long)
	want := fmt.Sprintf("socket path %q is 210 bytes, over the limit of 107, and so is its replacement %q; use a shorter $VMTUI_HOME or $XDG_RUNTIME_DIR",
		long, filepath.Join(tooLong.SocketFallbackDir, "858e7a68ab097d72-qmp.sock"))
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestSocketPathRefusesUnsafeDir(t *testing.T) {
	long := "/" + strings.Repeat("d", 200) + "/qmp.sock"
	base := t.TempDir()

	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o755)
	link := filepath.Join(base, "link")
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dir, why string }{
		{open, fmt.Sprintf("refusing to use %q: mode 0755 lets other users in (want 0700)", open)},
		{link, fmt.Sprintf("refusing to use %q: not a directory", link)},
		{file, fmt.Sprintf("refusing to use %q: not a directory", file)},
	}
	if os.Getuid() == 0 {
		other := filepath.Join(base, "other")
		if err := os.Mkdir(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct{ dir, why string }{other, fmt.Sprintf("refusing to use %q: owned by uid 65534, not 0", other)})
	}
	for _, tt := range tests {
		p := &Paths{SocketFallbackDir: tt.dir}
		_, err := p.SocketPath(long)
		want := fmt.Sprintf("socket path %q is 210 bytes, over the limit of 107: %s", long, tt.why)
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	}
}

func TestQMPSocketFallback(t *testing.T) {
	root := filepath.Join(t.TempDir(), strings.Repeat("h", 90))
	p := HomePaths(root)
	p.SocketFallbackDir = filepath.Join(t.TempDir(), "s")
	got, err := p.QMPSocket("web")
	if err != nil {
		t.Fatal(err)
	}
	if natural := p.RuntimeFile("web", QMPSocketName); got == natural || len(got) > SocketPathMax {
		t.Errorf("QMPSocket = %q, want a replacement for %q (%d bytes)", got, natural, len(natural))
	}
}
