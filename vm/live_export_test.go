package vm

import "time"

// SetMemoryStall sets how long SetMemory waits for a guest that makes no
// progress, for a test; it returns the function that restores it.
func SetMemoryStall(d time.Duration) (restore func()) {
	old := memoryStall
	memoryStall = d
	return func() { memoryStall = old }
}
