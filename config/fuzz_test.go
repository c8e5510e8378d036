package config

import (
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, must fail only with a
// *ValidationError, and must return a config that validates again unchanged.
// Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %T without problems: %v", err, err)
			}
			return
		}
		fps := make([]string, len(c.Forwarders))
		for i, fc := range c.Forwarders {
			fps[i] = fc.Fingerprint()
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a parsed config no longer validates: %v", err)
		}
		for i, fc := range c.Forwarders {
			if fc.Fingerprint() != fps[i] {
				t.Fatalf("Validate changed forwarders[%d]", i)
			}
		}
	})
}
