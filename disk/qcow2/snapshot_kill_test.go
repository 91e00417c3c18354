package qcow2_test

// The kill -9 test of snapshot operations: a child process (the test binary
// running TestSnapshotKillChild) takes, applies and deletes snapshots
// between writes, and is killed at random moments; every round, qemu-img
// check must find no corruption and every snapshot the child reported made
// before its last acknowledged step, and not deleted, must still be there.

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/qemuimg"
)

const snapKillChildEnv = "VMTUI_QCOW2_SNAPSHOT_KILL_CHILD"

// TestSnapshotKillChild is the child; it skips unless run by TestSnapshotKill.
func TestSnapshotKillChild(t *testing.T) {
	spec := os.Getenv(snapKillChildEnv)
	if spec == "" {
		t.Skip("runs only as TestSnapshotKill's subprocess")
	}
	path, seedStr, _ := strings.Cut(spec, ",")
	seed, _ := strconv.ParseUint(seedStr, 10, 64)
	fail := func(code int, format string, args ...any) {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		os.Exit(code)
	}
	img, err := tryOpen(path, false)
	if err != nil {
		fail(3, "open after a kill: %v", err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	fmt.Println("ready")
	for i := 0; ; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 1+r.IntN(100000))
		if _, err := img.WriteAt(p, r.Int64N(snapDisk-int64(len(p)))); err != nil {
			fail(4, "write: %v", err)
		}
		sns, err := img.Snapshots()
		if err != nil {
			fail(4, "list: %v", err)
		}
		switch {
		case len(sns) > 3:
			if err := img.DeleteSnapshot(sns[0].Name); err != nil {
				fail(4, "delete: %v", err)
			}
			fmt.Printf("deleted %s\n", sns[0].Name)
		case len(sns) > 0 && r.IntN(3) == 0:
			if err := img.ApplySnapshot(sns[r.IntN(len(sns))].Name); err != nil {
				fail(4, "apply: %v", err)
			}
			fmt.Println("applied")
		default:
			name := fmt.Sprintf("s%d-%d", seed, i)
			if _, err := img.CreateSnapshot(qcow2.Snapshot{Name: name, Date: time.Now()}); err != nil {
				fail(4, "create: %v", err)
			}
			fmt.Printf("created %s\n", name)
		}
	}
}

func TestSnapshotKill(t *testing.T) {
	qemuimg.Require(t)
	path := filepath.Join(t.TempDir(), "k.qcow2")
	qemuimg.Run(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, fmt.Sprint(snapDisk))
	r := rand.New(rand.NewPCG(5, 6))
	var want, gone []string // snapshots acknowledged made, and deleted
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSnapshotKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", snapKillChildEnv, path, round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		// Kill after a random number of acknowledged operations, and a
		// random moment into the next.
		stop := 1 + r.IntN(12)
		acked := 0
		for acked < stop && sc.Scan() {
			l := sc.Text()
			if name, ok := strings.CutPrefix(l, "created "); ok {
				want = append(want, name)
			} else if name, ok := strings.CutPrefix(l, "deleted "); ok {
				want = slices.DeleteFunc(want, func(s string) bool { return s == name })
				gone = append(gone, name)
			}
			if l != "ready" {
				acked++
			}
		}
		time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		var tail []string
		for sc.Scan() {
			tail = append(tail, sc.Text())
		}
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: the child exited by itself: %s", round, stderr.String())
		}
		res := qemuimg.Check(t, path)
		if res.Corruptions != 0 || res.CheckErrors != 0 {
			t.Fatalf("round %d: %d corruptions, %d check errors:\n%s", round, res.Corruptions, res.CheckErrors, res.Stderr)
		}
		// Acknowledged snapshots are there, acknowledged deletions
		// done; what the child did after (the tail, the interrupted
		// operation) may or may not be.
		var got []string
		for _, q := range qemuSnapshots(t, path) {
			got = append(got, q.Name)
		}
		// The child deletes the oldest snapshot: those its unacknowledged
		// deletions took, and the one the operation it was killed in
		// may have taken, can be gone.
		for _, l := range tail {
			if name, ok := strings.CutPrefix(l, "deleted "); ok {
				want = slices.DeleteFunc(want, func(s string) bool { return s == name })
			}
		}
		if len(want) > 0 && !slices.Contains(got, want[0]) {
			want = want[1:]
		}
		for _, name := range want {
			if !slices.Contains(got, name) {
				t.Fatalf("round %d: snapshot %s, acknowledged, is gone (have %v)", round, name, got)
			}
		}
		for _, name := range gone {
			if slices.Contains(got, name) {
				t.Fatalf("round %d: snapshot %s, acknowledged deleted, is there", round, name)
			}
		}
		t.Logf("round %d: killed after %d operations (%d more reported), snapshots %v", round, acked, len(tail), got)
		want, gone = got, nil
	}
}
