package poller

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// splitCases are records that test where splitRecord could part from json.Unmarshal:
// key case and Unicode folding, repeated keys, white space everywhere, nested values
// holding quotes, brackets and escapes, escaped keys, and values that are not objects.
var splitCases = []string{
	`{"Type":"Lead","CreateTime":"2023-11-24T02:36:21Z","SessionID":7}`,
	` { "type" : "Lead" , "createtime":"x" ,"SESSIONID": "7" , "Count" : 1e3 } `,
	"{\n\t\"Name\"\r:\t\"a\\\"b\\\\\" ,\"Email\":null,\"PhoneNumber\":5551234}",
	`{"Content":{"a":["}",{"b":"]\""}],"c":"{"},"URI":[1,[2,"]"]],"Count":true}`,
	`{"Type":"Lead","Type":"Appointment","type":"lead"}`,
	`{"N\u0061me":"escaped key","Name":"plain"}`,
	`{"Name":"escaped key last","N\u0061me":"x"}`,
	"{\"\u212aount\":3,\"ſessionID\":4,\"Name\":\"\u212a\"}", // Kelvin sign and long s fold to k and s
	`{"Unknown":{"Type":"nested, not the record's"},"Type":"Lead"}`,
	`{"Content":"caf\u00e9 \ud83d\ude00 \u2028","Name":"日本語","Email":"\u0000"}`,
	"{\"Name\":\"bad utf8 \xff\xfe\"}",
	`{}`,
	`{"Count":-0.5e-7,"SessionID":-12,"URI":false}`,
	`[1,2]`, `"a string"`, `42`, `true`, `null`,
}

// TestSplitRecordAgreesWithUnmarshal checks the hand-written record splitter against
// json.Unmarshal, the decoder it replaces, on the cases above; FuzzSplitRecord goes on
// from them.
func TestSplitRecordAgreesWithUnmarshal(t *testing.T) {
	for _, raw := range splitCases {
		requireSplitAsUnmarshal(t, []byte(raw))
	}
}

// FuzzSplitRecord checks splitRecord against json.Unmarshal on any well-formed JSON.
func FuzzSplitRecord(f *testing.F) {
	for _, raw := range splitCases {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // the decoder that reads records never hands over a malformed one
		}
		requireSplitAsUnmarshal(t, raw)
	})
}

func requireSplitAsUnmarshal(t *testing.T, raw []byte) {
	t.Helper()
	got, ok := splitRecord(raw)
	var want apiRecord
	err := json.Unmarshal(raw, &want)
	if !ok {
		return // decodeRecord falls back to json.Unmarshal itself
	}
	require.NoError(t, err, "splitRecord took %q, which json.Unmarshal refuses", raw)
	assert.Equal(t, want, normalize(got), "record %q", raw)
	for _, f := range []json.RawMessage{got.Type, got.Name, got.Email, got.PhoneNumber, got.CreateTime, got.Content, got.SessionID, got.URI, got.Count} {
		if len(f) > 0 && f[0] == '"' {
			s, ok := plainString(f)
			var w string
			require.NoError(t, json.Unmarshal(f, &w))
			if ok {
				assert.Equal(t, w, s, "string %q", f)
			}
		}
	}
}

// normalize makes r's missing fields nil, as json.Unmarshal leaves them.
func normalize(r apiRecord) apiRecord {
	for _, f := range []*json.RawMessage{&r.Type, &r.Name, &r.Email, &r.PhoneNumber, &r.CreateTime, &r.Content, &r.SessionID, &r.URI, &r.Count} {
		if len(*f) == 0 {
			*f = nil
		}
	}
	return r
}

// TestPlainStringFallsBack checks that a string with an escape or invalid UTF-8 is left
// to json.Unmarshal, which unescapes it and replaces invalid bytes with U+FFFD.
func TestPlainStringFallsBack(t *testing.T) {
	for _, s := range []string{`"a\"b"`, `"\u00e9"`, "\"\xff\"", `"a\nb"`} {
		_, ok := plainString([]byte(s))
		assert.False(t, ok, "%q", s)
		got, err := stringField([]byte(s))
		require.NoError(t, err)
		var want string
		require.NoError(t, json.Unmarshal([]byte(s), &want))
		assert.Equal(t, want, got, "%q", s)
	}
	got, ok := plainString([]byte(`"plain text, 日本語"`))
	require.True(t, ok)
	assert.Equal(t, "plain text, 日本語", got)
}

// TestDecodeRecordWithEscapedKeys checks that a record whose keys are escaped, which
// splitRecord leaves to json.Unmarshal, decodes as the same record written plainly.
func TestDecodeRecordWithEscapedKeys(t *testing.T) {
	plain := `{"Type":"Lead","CreateTime":"2023-11-24T02:36:21Z","SessionID":7,"Name":"Ann","Count":2}`
	escaped := `{"T\u0079pe":"Lead","CreateTime":"2023-11-24T02:36:21Z","Sess\u0069onID":7,"N\u0061me":"Ann","Count":2}`
	want, warns, err := decodeRecord(json.RawMessage(plain))
	require.NoError(t, err)
	require.Empty(t, warns)
	got, warns, err := decodeRecord(json.RawMessage(escaped))
	require.NoError(t, err)
	require.Empty(t, warns)
	assert.Equal(t, want, got)
	assert.Equal(t, "Ann", got.Name)
}

// TestArrayReaderAgreesWithDecoder checks arrayReader against json.Decoder on arrays
// read whole, a byte at a time and through reads that end mid-element, with elements of
// every JSON type, nested brackets inside strings, and elements larger than one read.
func TestArrayReaderAgreesWithDecoder(t *testing.T) {
	big := `{"Content":"` + strings.Repeat(`x\"]},`, 3*arrayReadSize/6) + `","Count":12345}`
	arrays := []string{
		`[]`, ` [ ] `, `[1]`, `[ 1 , -2.5e3 ,"s", true,false,null, {}, [] ]`,
		"[\n\t{\"a\":\"]\"},\r\n[{\"b\":[1,{\"c\":\"}\\\\\"}]}]]",
		`[` + big + `,` + big + `, 7]`,
		`[` + strings.Repeat(`{"Type":"Lead","SessionID":123456789},`, 5000) + `0]`,
	}
	for _, body := range arrays {
		var want []string
		dec := json.NewDecoder(strings.NewReader(body))
		_, err := dec.Token()
		require.NoError(t, err)
		for dec.More() {
			var raw json.RawMessage
			require.NoError(t, dec.Decode(&raw))
			want = append(want, string(raw))
		}
		readers := map[string]func() io.Reader{
			"whole":    func() io.Reader { return strings.NewReader(body) },
			"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(body)) },
			"half":     func() io.Reader { return iotest.HalfReader(strings.NewReader(body)) },
		}
		for name, r := range readers {
			arr := arrayReader{r: r()}
			var got []string
			for {
				raw, err := arr.next()
				require.NoError(t, err, "%s, %.40q", name, body)
				if raw == nil {
					break
				}
				got = append(got, string(raw))
				if len(got) < len(want) {
					require.True(t, arr.more(), "%s: more after element %d", name, len(got))
				}
			}
			assert.False(t, arr.more(), name)
			require.Equal(t, want, got, "%s, %.40q", name, body)
		}
	}
}

// TestArrayReaderTruncated checks that an array cut short, which scanBody never lets
// through, is an error and not a short page.
func TestArrayReaderTruncated(t *testing.T) {
	for _, body := range []string{``, `[`, `[1,`, `[{"a":1}`, `[{"a":"]`, `[123`} {
		arr := arrayReader{r: strings.NewReader(body)}
		var err error
		for err == nil {
			var raw []byte
			if raw, err = arr.next(); raw == nil && err == nil {
				t.Fatalf("%q read as a whole array", body)
			}
		}
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "%q", body)
	}
}
