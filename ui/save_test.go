package ui

import "context"

// Save records the save of VM name (vmtui save, the z key).
func (f *fakeBackend) Save(_ context.Context, name string) error {
	f.record("save " + name)
	return f.err
}
