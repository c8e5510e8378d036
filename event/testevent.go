package event

import "time"

// TestSource is the CloudEvents source of a test event: it says who sent it.
const TestSource = "leadbridge/send-test"

// NewTest is the sample record `leadbridge send-test` delivers for chatbot bot: of type
// TypeTest (Slack marks it TEST), with source TestSource and made-up personal data,
// created at now. A later now gives a fresh event id, so that JetStream does not drop a
// second test as a repeat.
func NewTest(bot Chatbot, k Kind, now time.Time) Event {
	ev := NewCreated(Lead{
		Chatbot: bot.Serial, ChatbotName: bot.Name, Account: bot.Account, Kind: k,
		Name: "Test Person (leadbridge send-test)", Email: "test@example.com", Phone: "+1 555 0100",
		Content:   "This is a test event sent by `leadbridge send-test`. No one booked anything.",
		SessionID: 0, URI: "https://example.com/leadbridge-test", Count: 1, CreatedAt: now.UTC(),
	})
	ev.Type = TypeTest
	ev.Source = TestSource
	return ev
}
