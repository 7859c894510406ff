// Package raw: echo messages encoded by hand and sent with a pass-through
// codec, so that the Go interop programs need no generated Go code.
package raw

import (
	"errors"
	"fmt"
)

// Codec passes encoded messages through as bytes.
type Codec struct{}

func (Codec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (Codec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (Codec) Name() string { return "proto" }

// Message encodes {1: text}, the shape of EchoRequest, GetRequest and WatchRequest.
func Message(text string) []byte {
	out := []byte{0x0a}
	n := len(text)
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	out = append(out, byte(n))
	return append(out, text...)
}

// Text decodes the string in field 1 of an EchoResponse.
func Text(b []byte) (string, error) {
	if len(b) == 0 {
		return "", nil
	}
	if b[0] != 0x0a {
		return "", fmt.Errorf("unexpected tag %#x", b[0])
	}
	n, shift, i := 0, 0, 1
	for ; i < len(b); i++ {
		n |= int(b[i]&0x7f) << shift
		shift += 7
		if b[i] < 0x80 {
			i++
			break
		}
	}
	if i+n > len(b) {
		return "", errors.New("truncated string")
	}
	return string(b[i : i+n]), nil
}
