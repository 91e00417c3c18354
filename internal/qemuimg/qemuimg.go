// Package qemuimg runs QEMU's qemu-img and qemu-io for tests: the oracle that
// vmtui's disk engine is checked against.
//
// When a tool is missing, tests skip on a developer's machine but fail when
// the CI environment variable is set: CI installs qemu-utils.
package qemuimg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Require makes the test skip (or fail in CI) unless qemu-img and qemu-io are installed.
func Require(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed (CI must install qemu-utils): %v", tool, err)
			}
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
}

// Run runs qemu-img with args and returns its stdout; a non-zero exit is an
// error carrying stderr.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := Output(args...)
	if err != nil {
		t.Fatalf("qemu-img %v: %v", args, err)
	}
	return out
}

// Output runs qemu-img with args and returns its stdout; on a non-zero exit
// the error is an *ExitError with the exit code and stderr.
func Output(args ...string) (string, error) {
	return run("qemu-img", args...)
}

// IO runs qemu-io on the image with the given -c commands (format given by
// fmt, e.g. "qcow2") and fails the test on error.
func IO(t testing.TB, image, format string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	args = append(args, image)
	out, err := run("qemu-io", args...)
	if err != nil {
		t.Fatalf("qemu-io %v: %v", args, err)
	}
	// qemu-io reports failed commands on stdout and still exits 0.
	for _, bad := range []string{"failed", "Pattern verification failed", "error"} {
		if bytes.Contains([]byte(out), []byte(bad)) {
			t.Fatalf("qemu-io %v: %s", args, out)
		}
	}
	return out
}

// ExitError is a tool's non-zero exit.
type ExitError struct {
	Tool   string
	Args   []string
	Code   int
	Stderr string
	Stdout string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("%s exited with %d: %s%s", e.Tool, e.Code, e.Stdout, e.Stderr)
}

func run(tool string, args ...string) (string, error) {
	cmd := exec.Command(tool, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), &ExitError{Tool: tool, Args: args, Code: ee.ExitCode(), Stderr: stderr.String(), Stdout: stdout.String()}
	}
	if err != nil {
		return "", fmt.Errorf("%s %v: %w", tool, args, err)
	}
	return stdout.String(), nil
}

// CheckResult is qemu-img check --output=json.
type CheckResult struct {
	Filename           string `json:"filename"`
	Format             string `json:"format"`
	CheckErrors        int    `json:"check-errors"`
	ImageEndOffset     int64  `json:"image-end-offset"`
	Corruptions        int    `json:"corruptions"`
	Leaks              int    `json:"leaks"`
	CorruptionsFixed   int    `json:"corruptions-fixed"`
	LeaksFixed         int    `json:"leaks-fixed"`
	TotalClusters      int64  `json:"total-clusters"`
	AllocatedClusters  int64  `json:"allocated-clusters"`
	FragmentedClusters int64  `json:"fragmented-clusters"`
	CompressedClusters int64  `json:"compressed-clusters"`
	ExitCode           int    `json:"-"`
	Stderr             string `json:"-"`
}

// Check runs qemu-img check --output=json on a qcow2 image. Exit codes 0, 2
// and 3 (clean, corruptions, leaks) are results, not errors.
func Check(t testing.TB, image string) CheckResult {
	t.Helper()
	out, err := Output("check", "--output=json", "-f", "qcow2", image)
	var r CheckResult
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Code != 2 && ee.Code != 3 {
			t.Fatalf("qemu-img check %s: %v", image, err)
		}
		r.ExitCode, r.Stderr = ee.Code, ee.Stderr
	} else if err != nil {
		t.Fatalf("qemu-img check %s: %v", image, err)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("qemu-img check %s: parse %q: %v", image, out, err)
	}
	return r
}

// RequireClean fails the test unless qemu-img check finds the image free of
// corruptions, check errors and (unless leaksOK) leaks.
func RequireClean(t testing.TB, image string, leaksOK bool) CheckResult {
	t.Helper()
	r := Check(t, image)
	if r.Corruptions != 0 || r.CheckErrors != 0 || (!leaksOK && r.Leaks != 0) {
		t.Fatalf("qemu-img check %s: %d corruptions, %d leaks, %d check errors (exit %d)\n%s",
			image, r.Corruptions, r.Leaks, r.CheckErrors, r.ExitCode, r.Stderr)
	}
	return r
}

// Compare runs qemu-img compare on two images of the given formats and fails
// the test unless they are identical.
func Compare(t testing.TB, a, aFormat, b, bFormat string) {
	t.Helper()
	if out, err := Output("compare", "-f", aFormat, "-F", bFormat, a, b); err != nil {
		t.Fatalf("qemu-img compare %s %s: %v %s", a, b, err, out)
	}
}

// ToRaw converts any image to a raw file at dst with qemu-img and returns its bytes.
func ToRaw(t testing.TB, src, dst string) []byte {
	t.Helper()
	Run(t, "convert", "-O", "raw", src, dst)
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Info is the subset of qemu-img info --output=json that tests compare.
type Info struct {
	VirtualSize     int64  `json:"virtual-size"`
	Filename        string `json:"filename"`
	ClusterSize     int64  `json:"cluster-size"`
	Format          string `json:"format"`
	ActualSize      int64  `json:"actual-size"`
	DirtyFlag       bool   `json:"dirty-flag"`
	BackingFilename string `json:"backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	FormatSpecific  struct {
		Type string `json:"type"`
		Data struct {
			Compat          string `json:"compat"`
			CompressionType string `json:"compression-type"`
			LazyRefcounts   bool   `json:"lazy-refcounts"`
			RefcountBits    int    `json:"refcount-bits"`
			Corrupt         bool   `json:"corrupt"`
			ExtendedL2      bool   `json:"extended-l2"`
		} `json:"data"`
	} `json:"format-specific"`
}

// ImageInfo runs qemu-img info --output=json.
func ImageInfo(t testing.TB, image string) Info {
	t.Helper()
	var info Info
	out := Run(t, "info", "--output=json", image)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info %s: %v", image, err)
	}
	return info
}
