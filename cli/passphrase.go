package cli

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/vmtui/vmtui/disk"
)

// passphraseFlag defines --passphrase-file, for the commands that read the
// data of AES-encrypted qcow images.
func passphraseFlag(fs *flag.FlagSet) *string {
	return fs.String("passphrase-file", "", "read the passphrase of an AES-encrypted qcow image from `file` "+
		"(its contents, less one final newline; a wrong passphrase cannot be detected)")
}

// readPassphrase reads the passphrase file name; "" means none.
func readPassphrase(name string) ([]byte, error) {
	if name == "" {
		return nil, nil
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("passphrase file %q: %w", name, disk.PathCause(err))
	}
	return bytes.TrimSuffix(b, []byte("\n")), nil
}
