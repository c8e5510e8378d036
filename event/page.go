package event

import "errors"

// Errors TakePage returns when read breaks the part-by-part protocol of a page.
var (
	ErrPartAfterEnd    = errors.New("part handed over after the page failed or ended")
	ErrReadAfterFailed = errors.New("read went on after a failed part")
)

// TakePage runs the protocol every store's IngestPage follows: read hands over the parts
// of one page, each of which add takes, the part marked last completing the page. After a
// failed part or the last one, take refuses more (ErrPartAfterEnd). If read returns nil
// after some part but none marked last, the page is completed with an empty last part;
// if it hands over nothing, add is never called. A read that returns nil after a failed
// part gets ErrReadAfterFailed. TakePage returns read's error otherwise (which may be
// take's).
func TakePage(read func(take func(leads []Lead, last bool) (Ingested, error)) error, add func(leads []Lead, last bool) (Ingested, error)) error {
	var failed, done, any bool
	err := read(func(leads []Lead, last bool) (Ingested, error) {
		if failed || done {
			return Ingested{}, ErrPartAfterEnd
		}
		res, err := add(leads, last)
		failed, done, any = err != nil, last, true
		return res, err
	})
	switch {
	case err != nil:
		return err
	case failed:
		return ErrReadAfterFailed
	case !done && any:
		_, err = add(nil, true)
	}
	return err
}
