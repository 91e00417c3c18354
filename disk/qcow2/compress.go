package qcow2

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Compressed clusters hold raw deflate streams (no zlib header; QEMU inflates
// them in one call into a cluster-sized buffer, so any window size works) or
// zstd frames. Either may be followed by unrelated bytes up to the end of the
// last 512-byte sector, which decompression must ignore.

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdEncErr  error

	zstdDecPool sync.Pool // *zstd.Decoder
	flatePool   sync.Pool // io.ReadCloser from flate.NewReader
	deflatePool sync.Pool // *flate.Writer at the default level
	huffmanPool sync.Pool // *flate.Writer, Huffman coding only
)

// Compress compresses one cluster's data with the given type, appending to
// dst. Compression runs without locks, so callers may compress many
// clusters in parallel and hand the results to WriteCompressedRaw.
func Compress(ct CompressionType, dst, data []byte) ([]byte, error) {
	switch ct {
	case CompressionZlib:
		out, err := deflate(&deflatePool, flate.DefaultCompression, dst, data)
		if err != nil || len(out)-len(dst) < len(data)-1 {
			return out, err
		}
		// LZ matching found too little; entropy coding alone may still
		// pay (text with few repeats), as zlib's would.
		return deflate(&huffmanPool, flate.HuffmanOnly, dst, data)
	case CompressionZstd:
		zstdEncOnce.Do(func() {
			zstdEnc, zstdEncErr = zstd.NewWriter(nil, zstd.WithEncoderCRC(false),
				zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
		})
		if zstdEncErr != nil {
			return nil, zstdEncErr
		}
		return zstdEnc.EncodeAll(data, dst), nil
	}
	return nil, &UnsupportedError{Feature: ct.String()}
}

// deflate compresses data with a pooled writer of the given level, appending to dst.
func deflate(pool *sync.Pool, level int, dst, data []byte) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	w, _ := pool.Get().(*flate.Writer)
	if w == nil {
		var err error
		if w, err = flate.NewWriter(buf, level); err != nil {
			return nil, err
		}
	} else {
		w.Reset(buf)
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	pool.Put(w)
	return buf.Bytes(), nil
}

// decompress fills out, exactly one cluster (or the part of it inside the
// disk), from the compressed bytes in src.
func decompress(ct CompressionType, src, out []byte) error {
	switch ct {
	case CompressionZlib:
		r, _ := flatePool.Get().(io.ReadCloser)
		if r == nil {
			r = flate.NewReader(bytes.NewReader(src))
		} else if err := r.(flate.Resetter).Reset(bytes.NewReader(src), nil); err != nil {
			return err
		}
		_, err := io.ReadFull(r, out)
		flatePool.Put(r)
		if err != nil {
			return fmt.Errorf("inflate compressed cluster: %w", err)
		}
		return nil
	case CompressionZstd:
		d, _ := zstdDecPool.Get().(*zstd.Decoder)
		if d == nil {
			var err error
			d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(8<<20))
			if err != nil {
				return err
			}
		}
		if err := d.Reset(bytes.NewReader(src)); err != nil {
			return fmt.Errorf("zstd compressed cluster: %w", err)
		}
		_, err := io.ReadFull(d, out)
		zstdDecPool.Put(d)
		if err != nil {
			return fmt.Errorf("zstd compressed cluster: %w", err)
		}
		return nil
	}
	return &UnsupportedError{Feature: ct.String()}
}
