package vm

import (
	"slices"
	"strings"
	"testing"
)

// The shares' part of the command line: a vhost-user chardev on each
// virtiofsd's socket and a vhost-user-fs-pci device with the share's tag,
// in the order of the definition, after the networks.
func TestCmdlineShares(t *testing.T) {
	s := Spec{
		Name: "web", Memory: 512 << 20, CPUs: 2, QMPFD: 3, PIDFile: "/run/vmtui/web/qemu.pid",
		Nets: []NetSpec{{}},
		Shares: []ShareSpec{
			{Path: "/srv/data", Tag: "data", Socket: "/run/vmtui/web/fs0.sock"},
			{Path: "/srv/ro", Tag: "docs.v2", ReadOnly: true, Socket: "/run/vmtui/we,b/fs1.sock"},
		},
	}
	got, err := Cmdline(s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,id=net0-dev",
		"-chardev", "socket,id=fs0,path=/run/vmtui/web/fs0.sock",
		"-device", "vhost-user-fs-pci,chardev=fs0,id=fs0-dev,tag=data",
		// A comma in the socket's path is doubled: no option can be added.
		"-chardev", "socket,id=fs1,path=/run/vmtui/we,,b/fs1.sock",
		"-device", "vhost-user-fs-pci,chardev=fs1,id=fs1-dev,tag=docs.v2",
	}
	i := slices.Index(got, "-netdev")
	if i < 0 || len(got) < i+len(want) || !slices.Equal(got[i:i+len(want)], want) {
		t.Errorf("Cmdline:\ngot  %q\nwant %q in it", got, want)
	}
	// The guest's memory is what virtiofsd maps: it must be shared.
	if !slices.ContainsFunc(got, func(a string) bool { return strings.Contains(a, "share=on") }) {
		t.Errorf("Cmdline: no memory backend with share=on for the shares:\n%q", got)
	}
}

func TestCmdlineSharesRefused(t *testing.T) {
	ok := ShareSpec{Path: "/srv/data", Tag: "data", Socket: "/run/fs0.sock"}
	tests := []struct {
		name   string
		shares []ShareSpec
		want   string
	}{
		{"no socket", []ShareSpec{{Path: "/srv", Tag: "data"}}, "shares[0]: no virtiofsd socket"},
		{"bad tag", []ShareSpec{{Path: "/srv", Tag: "a,b", Socket: "/run/fs0.sock"}}, `shares[0]: invalid tag "a,b"`},
		{"empty tag", []ShareSpec{{Path: "/srv", Socket: "/run/fs0.sock"}}, "shares[0]: empty tag"},
		{"newline in socket", []ShareSpec{{Path: "/srv", Tag: "t", Socket: "/run/a\nb"}}, "contains a NUL or newline"},
		{"tag twice", []ShareSpec{ok, ok}, `shares[1]: tag "data" is also another share's`},
		{"too many", slices.Repeat([]ShareSpec{ok}, 9), "too many shares (9, at most 8)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Spec{Name: "web", Memory: 512 << 20, CPUs: 1, QMPFD: 3, Shares: tt.shares}
			_, err := Cmdline(s)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "vm web: ") {
				t.Errorf("Cmdline: error %v, want one naming the vm and %q", err, tt.want)
			}
		})
	}
}

func TestCheckSharePath(t *testing.T) {
	for _, p := range []string{"/srv/data", "/home/a b/ü"} {
		if err := checkSharePath(0, p); err != nil {
			t.Errorf("checkSharePath(%q): %v", p, err)
		}
	}
	for p, want := range map[string]string{
		"srv/data":          "is not absolute",
		"/srv/a,allow_root": "comma",
		`/srv/a\,b`:         "backslash",
	} {
		if err := checkSharePath(3, p); err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "shares[3]: ") {
			t.Errorf("checkSharePath(%q): %v, want an error naming shares[3] and %q", p, err, want)
		}
	}
}

// extra_args cannot define a chardev with a share's id.
func TestCmdlineShareChardevReserved(t *testing.T) {
	s := Spec{Name: "web", Memory: 512 << 20, CPUs: 1, QMPFD: 3,
		Extra: []string{"-chardev", "socket,id=fs0,path=/tmp/evil.sock"}}
	_, err := Cmdline(s)
	if err == nil || !strings.Contains(err.Error(), `extra_args[0]: option "-chardev" with id "fs0"`) {
		t.Errorf("Cmdline: %v, want extra_args' chardev fs0 refused", err)
	}
}
