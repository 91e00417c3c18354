package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned by TryLock when another open file holds the lock.
var ErrLocked = errors.New("store: file is locked")

// FileLock is an exclusive flock(2) lock, held until Unlock or until the
// process exits. flock locks belong to an open file, so two FileLocks on
// the same path exclude each other within one process as well as across
// processes.
type FileLock struct {
	f *os.File
}

// TryLock takes the lock on path, creating the file (mode 0600) if needed,
// or returns ErrLocked at once if it is held.
func TryLock(path string) (*FileLock, error) { return tryLock(path, unix.LOCK_EX) }

// TryLockShared takes a shared lock on path: any number of shared locks
// may be held at once, but none while an exclusive one is. It returns
// ErrLocked at once if an exclusive lock is held.
func TryLockShared(path string) (*FileLock, error) { return tryLock(path, unix.LOCK_SH) }

func tryLock(path string, how int) (*FileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := flock(f, how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %q: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %q: %w", path, err)
	}
	return &FileLock{f: f}, nil
}

// Lock takes the lock on path, creating the file (mode 0600) if needed,
// waiting for it as long as ctx allows.
func Lock(ctx context.Context, path string) (*FileLock, error) {
	return lock(ctx, path, unix.LOCK_EX)
}

// LockShared takes a shared lock on path (see TryLockShared), waiting for
// it as long as ctx allows.
func LockShared(ctx context.Context, path string) (*FileLock, error) {
	return lock(ctx, path, unix.LOCK_SH)
}

func lock(ctx context.Context, path string, how int) (*FileLock, error) {
	delay := time.Millisecond
	for {
		l, err := tryLock(path, how)
		if !errors.Is(err, ErrLocked) {
			return l, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("lock %q: %w", path, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// Unlock releases the lock.
func (l *FileLock) Unlock() error {
	err := flock(l.f, unix.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}
