package qcow

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
)

// ErrEncryptedWrite refuses writing an AES-encrypted image.
var ErrEncryptedWrite = errors.New("qcow: writing an AES-encrypted qcow image is not supported: " +
	"its encryption is broken (QEMU's emulators refuse such images); " +
	"convert it instead: vmtui disk convert --passphrase-file FILE old.qcow new.qcow2")

// ErrNeedPassphrase is returned by Open for an encrypted image without a
// passphrase.
var ErrNeedPassphrase = errors.New("qcow: the image is AES-encrypted: a passphrase is needed (--passphrase-file)")

// newCipher returns the AES-128 cipher of QEMU's legacy qcow encryption:
// the key is the passphrase's first 16 bytes, padded with zeros. Nothing in
// the image tells a wrong passphrase from the right one.
func newCipher(passphrase []byte) cipher.Block {
	var key [16]byte
	copy(key[:], passphrase)
	b, _ := aes.NewCipher(key[:]) // a 16-byte key is always valid
	return b
}

// decryptSectors decrypts buf in place, whole 512-byte sectors, the first
// of which is the virtual disk's sector number sector: AES-CBC, each sector
// on its own with the IV "plain64" (the sector number, little-endian,
// padded with zeros).
func decryptSectors(b cipher.Block, buf []byte, sector int64) {
	var iv [aes.BlockSize]byte
	for off := 0; off+512 <= len(buf); off += 512 {
		binary.LittleEndian.PutUint64(iv[:], uint64(sector))
		cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(buf[off:off+512], buf[off:off+512])
		sector++
	}
}
