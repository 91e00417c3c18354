package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
)

func TestParseShare(t *testing.T) {
	tests := []struct {
		in   string
		want config.Share
		err  string
	}{
		{in: "/srv/data:data", want: config.Share{Path: "/srv/data", Tag: "data"}},
		{in: "/srv/docs:docs:ro", want: config.Share{Path: "/srv/docs", Tag: "docs", ReadOnly: true}},
		{in: "/a:b/c:d.e", want: config.Share{Path: "/a:b/c", Tag: "d.e"}},
		{in: "/srv/x:ro", want: config.Share{Path: "/srv/x", Tag: "ro"}},
		{in: "/srv/x:ro:ro", want: config.Share{Path: "/srv/x", Tag: "ro", ReadOnly: true}},
		{in: "/srv/data", err: `"/srv/data": want dir:tag or dir:tag:ro`},
		{in: "/srv/data:", err: "want dir:tag"},
		{in: ":tag", err: "want dir:tag"},
		{in: "/srv/data:a b", err: `invalid tag "a b"`},
	}
	for _, tt := range tests {
		got, err := parseShare(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseShare(%q): %+v, %v; want error %q", tt.in, got, err, tt.err)
			}
		case err != nil || got != tt.want:
			t.Errorf("parseShare(%q): %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// define --share saves the shares in the definition, the directory made
// absolute; a bad one is refused naming the flag.
func TestDefineShare(t *testing.T) {
	dir := t.TempDir()
	paths := func() (*store.Paths, error) { return store.HomePaths(dir), nil }
	code, _, errOut := runIn(t, dir, paths, "define", "-b", "/k", "--share", "data:data", "--share", "/srv/docs:docs:ro", "web")
	if code != 0 {
		t.Fatalf("define: exit %d: %s", code, errOut)
	}
	s, err := store.Open(store.HomePaths(dir))
	if err != nil {
		t.Fatal(err)
	}
	def, err := s.Lookup("web")
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Share{{Path: filepath.Join(dir, "data"), Tag: "data"}, {Path: "/srv/docs", Tag: "docs", ReadOnly: true}}
	if len(def.Shares) != 2 || def.Shares[0] != want[0] || def.Shares[1] != want[1] {
		t.Errorf("shares %+v, want %+v", def.Shares, want)
	}
	code, _, errOut = runIn(t, dir, paths, "define", "-b", "/k", "--share", "/srv", "web2")
	if code == 0 || !strings.Contains(errOut, "define web2: --share: ") {
		t.Errorf("define --share /srv: exit %d, stderr %q; want an error naming --share", code, errOut)
	}
	code, _, errOut = runIn(t, dir, paths, "define", "-t", "web", "--share", "/a:t", "web4")
	if code == 0 || !strings.Contains(errOut, "--share defines a new VM's shares, not an instance's") {
		t.Errorf("define -t --share: exit %d, stderr %q; want --share refused", code, errOut)
	}
	code, _, errOut = runIn(t, dir, paths, "define", "-b", "/k", "--share", "/a:t", "--share", "/b:t", "web3")
	if code == 0 || !strings.Contains(errOut, "shares[1].tag") {
		t.Errorf("define with one tag twice: exit %d, stderr %q; want an error naming shares[1].tag", code, errOut)
	}
}
