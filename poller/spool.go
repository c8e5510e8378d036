package poller

import (
	"io"
	"os"
	"sync"
)

// memSpool is how much of a response body a spool keeps in memory before it moves to a
// temporary file: an ordinary poll's answer never touches the disk.
const memSpool = 1 << 20

// maxPooledSpool is the largest in-memory spool whose memory Close keeps for the next
// spool: an ordinary answer's, not a large one's.
const maxPooledSpool = 64 << 10

// spoolBufs holds the memory of closed spools, so that an idle daemon's polls reuse a
// few buffers instead of growing a new one for every answer.
var spoolBufs = sync.Pool{New: func() any { return new([]byte) }}

// spool keeps a response body while it is checked, so that its records can be read back
// once it proved to be a page: in memory up to memSpool bytes, beyond that in a
// temporary file in dir, which Close removes. It is written once, then read.
type spool struct {
	dir string
	mem []byte
	buf *[]byte // from spoolBufs, until Close gives it back
	f   *os.File
}

// Write appends p.
func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.buf == nil {
		s.buf = spoolBufs.Get().(*[]byte)
		s.mem = (*s.buf)[:0]
	}
	if s.f == nil && len(s.mem)+len(p) <= memSpool {
		s.mem = append(s.mem, p...)
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "leadbridge-leadlist-*")
		if err != nil {
			return 0, err
		}
		s.f = f
		if _, err := f.Write(s.mem); err != nil {
			return 0, err
		}
		s.mem = nil
	}
	return s.f.Write(p)
}

// ReadAt reads what was written, from off.
func (s *spool) ReadAt(p []byte, off int64) (int, error) {
	if s.f != nil {
		return s.f.ReadAt(p, off)
	}
	if off >= int64(len(s.mem)) {
		return 0, io.EOF
	}
	n := copy(p, s.mem[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close removes the temporary file, if there is one, or gives the memory back for the
// next spool. Nothing may read the spool after.
func (s *spool) Close() error {
	if s.buf != nil && s.f == nil && cap(s.mem) <= maxPooledSpool {
		*s.buf = s.mem[:0]
		spoolBufs.Put(s.buf)
	}
	s.buf, s.mem = nil, nil
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	if rerr := os.Remove(s.f.Name()); err == nil {
		err = rerr
	}
	return err
}
