package vm

// savedStateFile returns the path of the VM's saved state (save.go), or ""
// when it is not saved.
func (m *Manager) savedStateFile(name string) string {
	if !m.HasSavedState(name) {
		return ""
	}
	return m.paths.SavedStateFile(name)
}
