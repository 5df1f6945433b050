package tracker

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// txBuffer holds one open transaction's changes until its commit releases
// their after_commit events. The first changes stay in memory; once they
// take more than limit bytes, the rest go to an unlinked temporary file, so a
// transaction of any size runs in bounded memory.
type txBuffer struct {
	dir   string
	limit int64

	mem      []bufEntry
	memBytes int64

	file    *os.File
	w       *bufio.Writer
	spilled int
	fileLen int64
	scratch []byte

	// retracted holds the txseqs rollbacks to savepoints withdrew, and
	// nRetracted how many they are.
	retracted  []SeqRange
	nRetracted int
	// subtx maps a subtransaction to the txseqs of its changes, as ranges.
	subtx map[string][]SeqRange
}

type bufEntry struct {
	c    *Change
	data []byte
}

// entryOverhead approximates the memory a buffered change costs beyond its
// encoded data (the Change, its rows' slices and headers).
const entryOverhead = 256

func newTxBuffer(dir string, limit int64) *txBuffer {
	return &txBuffer{dir: dir, limit: limit}
}

// add keeps c (and its encoded data) for the commit.
func (b *txBuffer) add(c *Change, data []byte) error {
	if c.SubTx != "" {
		if b.subtx == nil {
			b.subtx = make(map[string][]SeqRange)
		}
		runs := b.subtx[c.SubTx]
		if n := len(runs); n > 0 && runs[n-1].To == c.Seq-1 {
			runs[n-1].To = c.Seq
		} else {
			runs = append(runs, SeqRange{c.Seq, c.Seq})
		}
		b.subtx[c.SubTx] = runs
	}
	size := int64(len(data)) + entryOverhead
	if b.file == nil && b.memBytes+size <= b.limit {
		b.mem = append(b.mem, bufEntry{c: c, data: data})
		b.memBytes += size
		return nil
	}
	return b.spill(c)
}

func (b *txBuffer) spill(c *Change) error {
	if b.file == nil {
		f, err := os.CreateTemp(b.dir, "trackerd-tx-*.spill")
		if err != nil {
			return fmt.Errorf("spill transaction: %w", err)
		}
		// Unlinked at once: the file lives while it is open and leaves
		// nothing behind after a crash.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return fmt.Errorf("spill transaction: %w", err)
		}
		b.file = f
		b.w = bufio.NewWriterSize(f, 256<<10)
	}
	b.scratch = appendChange(b.scratch[:0], c)
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b.scratch)))
	if _, err := b.w.Write(hdr[:n]); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	if _, err := b.w.Write(b.scratch); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	b.spilled++
	b.fileLen += int64(n + len(b.scratch))
	return nil
}

// len returns the number of changes that are not retracted.
func (b *txBuffer) len() int { return len(b.mem) + b.spilled - b.nRetracted }

// spilledBytes is the size of the spill file.
func (b *txBuffer) spilledBytes() int64 { return b.fileLen }

// retractSubTx withdraws the changes of subtransaction sub and returns their
// txseq ranges.
func (b *txBuffer) retractSubTx(sub string) []SeqRange {
	runs := b.subtx[sub]
	delete(b.subtx, sub)
	for _, r := range runs {
		b.retracted = append(b.retracted, r)
		b.nRetracted += r.To - r.From + 1
	}
	return runs
}

// isRetracted reports whether the change with txseq seq was withdrawn.
// Ranges are few (one per rolled-back savepoint), so a scan is fine.
func (b *txBuffer) isRetracted(seq int) bool {
	for _, r := range b.retracted {
		if seq >= r.From && seq <= r.To {
			return true
		}
	}
	return false
}

// each calls fn for every change not retracted, in order; data is nil for
// changes read back from disk (the caller encodes them again).
func (b *txBuffer) each(fn func(c *Change, data []byte) error) error {
	for _, e := range b.mem {
		if b.isRetracted(e.c.Seq) {
			continue
		}
		if err := fn(e.c, e.data); err != nil {
			return err
		}
	}
	if b.file == nil {
		return nil
	}
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("read spilled transaction: %w", err)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(b.file, 0, b.fileLen), 256<<10)
	var d decoder
	var rec []byte
	for i := 0; i < b.spilled; i++ {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("read spilled transaction: %w", err)
		}
		if uint64(cap(rec)) < n {
			rec = make([]byte, n)
		}
		rec = rec[:n]
		if _, err := io.ReadFull(r, rec); err != nil {
			return fmt.Errorf("read spilled transaction: %w", err)
		}
		c, err := d.decodeChange(rec)
		if err != nil {
			return fmt.Errorf("read spilled transaction: %w", err)
		}
		if b.isRetracted(c.Seq) {
			continue
		}
		if err := fn(&c, nil); err != nil {
			return err
		}
	}
	return nil
}

// close releases the buffer's memory and spill file.
func (b *txBuffer) close() {
	if b.file != nil {
		b.file.Close()
		b.file = nil
	}
	b.mem = nil
	b.w = nil
}
