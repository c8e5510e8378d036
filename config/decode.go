package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/leadbridge/leadbridge/internal/httpx"
)

// docInfo is what decoding learnt about the YAML document beyond the values themselves.
type docInfo struct {
	lines    map[string]int  // key path → line of its key (or list item)
	empty    []string        // string keys present with an empty value, in document order
	bad      map[string]bool // key paths whose value failed to decode
	problems []Problem       // decode problems, in document order
	hide     *httpx.Redactor // hides the values taken from the environment
}

// minHidden is the length from which an environment value is hidden in messages; shorter
// ones ("info", "true") are too common to be secrets and hiding them would garble text.
const minHidden = 6

// scrub replaces every word of s holding an environment value, plain or escaped, with
// [redacted] (see httpx.Redactor), so that a secret placed under the wrong key is not
// echoed either, nor what surrounds it in the same word.
func (d *docInfo) scrub(s string) string {
	return d.hide.Redact(s)
}

// scalars names what a key of each plain kind takes, and the YAML tags it accepts: a
// bool only true or false (not "yes"), an integer no float.
var scalars = map[reflect.Kind]struct {
	name string
	tags []string
}{
	reflect.Bool:    {"true or false", []string{"!!bool"}},
	reflect.Int:     {"an integer", []string{"!!int"}},
	reflect.Int64:   {"an integer", []string{"!!int"}},
	reflect.Float64: {"a number", []string{"!!int", "!!float"}},
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	forwarderType = reflect.TypeFor[ForwarderConfig]()
)

// typeKeys lists the keys owned by each forwarder type.
var typeKeys = map[string]map[string]int{
	TypeWebhook: fieldsOf(reflect.TypeFor[Webhook]()),
	TypeNATS:    fieldsOf(reflect.TypeFor[NATS]()),
	TypeSlack:   fieldsOf(reflect.TypeFor[Slack]()),
}

// decodeYAML decodes one YAML document into c by walking its node tree, so that every
// unknown key and every ill-typed value becomes a Problem naming its key path and line.
// envValues are hidden from messages. It returns a message only for YAML that does not
// parse.
func decodeYAML(data []byte, envValues []string, c *Config) string {
	c.doc = &docInfo{lines: map[string]int{}, bad: map[string]bool{}}
	var hide []string
	for _, v := range envValues {
		if len(v) >= minHidden {
			hide = append(hide, v)
		}
	}
	c.doc.hide = httpx.NewRedactor(hide...)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return ""
		}
		return c.doc.scrub("invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return c.doc.scrub("invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: "))
	default:
		return fmt.Sprintf("only one YAML document is allowed (line %d)", next.Line)
	}
	if len(root.Content) > 0 {
		decoder{doc: c.doc}.value(root.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	return ""
}

type decoder struct{ doc *docInfo }

func (d decoder) problem(path string, n *yaml.Node, format string, args ...any) {
	d.doc.bad[path] = true
	d.doc.problems = append(d.doc.problems, Problem{
		Path: d.doc.scrub(path), Msg: d.doc.scrub(fmt.Sprintf(format, args...)), Line: n.Line,
	})
}

// value decodes n into v, whose key path is path. A null leaves v as it is (holding
// its default), except that a string becomes "" (reported as empty, or for http.listen
// meaning off) and a forwarders item, which has no default of its own, gets the
// forwarder defaults (an entry with every key left out).
func (d decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	if isNull(n) {
		switch {
		case v.Kind() == reflect.String:
			v.SetString("")
		case v.Type() == forwarderType:
			v.Set(reflect.ValueOf(DefaultForwarder("")))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == forwarderType {
			d.forwarder(n, v, path)
			return
		}
		fields := fieldsOf(v.Type())
		d.mapping(n, path, func(key string) (reflect.Value, string) {
			if i, ok := fields[key]; ok {
				return v.Field(i), ""
			}
			return reflect.Value{}, "unknown key"
		})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, n, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.doc.lines[p] = item.Line
			d.value(item, s.Index(i), p)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		d.mapping(n, path, func(key string) (reflect.Value, string) {
			return reflect.New(v.Type().Elem()).Elem(), ""
		}, func(key string, val reflect.Value) {
			m.SetMapIndex(reflect.ValueOf(key), val)
		})
		v.Set(m)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
	default:
		d.scalar(n, v, path)
	}
}

// scalar decodes the scalar n into v: a duration, a string, or a kind in scalars.
func (d decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	want, ok := scalars[v.Kind()]
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.problem(path, n, "expected a duration such as 30s, got %s", describe(n))
		} else if dur, err := time.ParseDuration(n.Value); err != nil {
			d.problem(path, n, "invalid duration %s", quote(n.Value))
		} else {
			v.SetInt(int64(dur))
		}
	case v.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.problem(path, n, "expected a string, got %s", describe(n))
		} else {
			v.SetString(n.Value)
		}
	case !ok:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), path))
	case n.Kind != yaml.ScalarNode || !slices.Contains(want.tags, n.ShortTag()) || n.Decode(v.Addr().Interface()) != nil:
		d.problem(path, n, "expected %s, got %s", want.name, describe(n))
	}
}

// mapping decodes the mapping n at path. field returns where a key's value goes, or a
// message saying why the key is not accepted ("" to skip it silently). Optional store
// callbacks receive each decoded value (for maps, whose values are not addressable).
func (d decoder) mapping(n *yaml.Node, path string, field func(key string) (reflect.Value, string), store ...func(string, reflect.Value)) {
	if n.Kind != yaml.MappingNode {
		d.problem(path, n, "expected a mapping, got %s", describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.problem(path, k, "a key must be a string, got %s", describe(k))
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if seen[k.Value] {
			d.problem(p, k, "duplicate key")
			continue
		}
		seen[k.Value] = true
		dst, msg := field(k.Value)
		if !dst.IsValid() {
			if msg != "" {
				d.problem(p, k, "%s", msg)
			}
			continue
		}
		d.doc.lines[p] = k.Line
		d.value(val, dst, p)
		if dst.Kind() == reflect.String && dst.String() == "" && !d.doc.bad[p] {
			d.doc.empty = append(d.doc.empty, p)
		}
		for _, s := range store {
			s(k.Value, dst)
		}
	}
}

// forwarder decodes one forwarders[] item: the common keys plus those of its type.
func (d decoder) forwarder(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.problem(path, n, "expected a mapping, got %s", describe(n))
		return
	}
	f := v.Addr().Interface().(*ForwarderConfig)
	typ := ""
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, val := resolve(n.Content[i]), resolve(n.Content[i+1]); k.Value == "type" && val.Kind == yaml.ScalarNode {
			typ = val.Value
			break
		}
	}
	*f = DefaultForwarder(typ)
	var specific reflect.Value
	switch typ {
	case TypeWebhook:
		specific = reflect.ValueOf(f.Webhook).Elem()
	case TypeNATS:
		specific = reflect.ValueOf(f.NATS).Elem()
	case TypeSlack:
		specific = reflect.ValueOf(f.Slack).Elem()
	}
	common := fieldsOf(forwarderType)
	d.mapping(n, path, func(key string) (reflect.Value, string) {
		if i, ok := common[key]; ok {
			return v.Field(i), ""
		}
		if specific.IsValid() {
			if i, ok := typeKeys[typ][key]; ok {
				return specific.Field(i), ""
			}
		}
		for _, keys := range typeKeys {
			if _, ok := keys[key]; ok {
				if specific.IsValid() {
					return reflect.Value{}, "not a key of a " + typ + " forwarder"
				}
				return reflect.Value{}, "" // the type is missing or wrong; that is reported
			}
		}
		return reflect.Value{}, "unknown key"
	})
}

// fieldsOf maps the yaml keys of struct type t to field indexes.
func fieldsOf(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); f.IsExported() && name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds for a type error; scalars of the wrong type are
// quoted (keys that take secrets are strings, which accept any scalar).
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return quote(n.Value)
	}
	return "an unsupported node"
}

// quote quotes a value for a message.
func quote(s string) string { return strconv.Quote(s) }
