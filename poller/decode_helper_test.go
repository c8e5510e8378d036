package poller

import (
	"bytes"
	"context"

	"github.com/leadbridge/leadbridge/event"
)

// decode turns a whole 2xx body into a Page, or an *APIError (Success: false, or a Code
// outside 2xx) or a *DecodeError: the client's stream over a body held in memory, as the
// decoding tests and FuzzDecode use it.
func (c *Client) decode(bot event.Chatbot, body []byte) (Page, error) {
	return whole(func(take func(Page) error) error {
		return c.stream(context.Background(), bot, &bodyReader{r: bytes.NewReader(body), limit: int64(len(body))},
			bytes.NewReader(body), nil, take)
	})
}
