package webhook_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/event"
)

// recipesDoc is the page whose forwarder blocks this test runs.
const recipesDoc = "../../docs/recipes.md"

// recipeEnv is what the recipes' ${VAR}s hold in this test.
var recipeEnv = map[string]string{
	"HUBSPOT_PORTAL_ID":   "20000001",
	"HUBSPOT_FORM_GUID":   "6d1c2b1e-3b0c-4c7e-9a55-0123456789ab",
	"SALESFORCE_ORG_ID":   "00D5e000000AbCd",
	"PIPEDRIVE_API_TOKEN": "pd-token-SECRET",
	"PIPEDRIVE_ORG_ID":    "42",
	"ZAPIER_HOOK_PATH":    "1234567/abcdefg",
	"SHEETS_SCRIPT_ID":    "AKfycbx-script-id",
	"SHEETS_TOKEN":        "sheet-token-SECRET",
	"TEAMS_WORKFLOW_URL":  "https://prod-07.westeurope.logic.azure.com:443/workflows/0a1b2c/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SIGSECRET",
}

// recipeBlocks returns the ```yaml NAME blocks of docs/recipes.md by name.
func recipeBlocks(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(recipesDoc)
	require.NoError(t, err)
	defer f.Close()
	blocks := map[string]string{}
	var name string
	var body strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case name == "" && strings.HasPrefix(line, "```yaml "):
			name = strings.TrimSpace(strings.TrimPrefix(line, "```yaml "))
			body.Reset()
		case name != "" && line == "```":
			blocks[name] = body.String()
			name = ""
		case name != "":
			body.WriteString(line + "\n")
		}
	}
	require.NoError(t, sc.Err())
	return blocks
}

// loadRecipe loads one block as the only forwarder of a config, the way the daemon would.
func loadRecipe(t *testing.T, block string) config.ForwarderConfig {
	t.Helper()
	for k, v := range recipeEnv {
		t.Setenv(k, v)
	}
	var indented strings.Builder
	for _, line := range strings.SplitAfter(block, "\n") {
		if line != "" {
			indented.WriteString("  " + line)
		}
	}
	doc := "neoagent:\n  api_key: k\n  chatbots: [{serial: bot1, name: Main site}]\nforwarders:\n" + indented.String()
	cfg, err := config.Parse([]byte(doc), "docs/recipes.md")
	require.NoError(t, err)
	require.Len(t, cfg.Forwarders, 1)
	return cfg.Forwarders[0]
}

// recipeLeads are the records every recipe must carry: a full one with Markdown and a
// Slack mention in it, a one-word name without phone, no name nor email, several names
// with a long message.
func recipeLeads() []event.Event {
	at := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	mk := func(kind event.Kind, session int64, name, email, phone, content, uri string) event.Event {
		return event.NewCreated(event.Lead{Chatbot: "bot1", ChatbotName: "Main site", Kind: kind, Name: name,
			Email: email, Phone: phone, Content: content, SessionID: session, URI: uri, Count: 1,
			CreatedAt: at.Add(time.Duration(session) * time.Minute)})
	}
	return []event.Event{
		mk(event.KindAppointment, 1, "Ada Lovelace", "ada@example.com", "+1 555 0100",
			"Call me [here](https://evil.example) & soon <!channel>", "https://www.example.com/pricing"),
		mk(event.KindLead, 2, "Cher", "cher@example.com", "", "Hello", "www.example.com"),
		mk(event.KindLead, 3, "", "", "+44 20 7946 0000", "", ""),
		mk(event.KindAppointment, 4, "María José  de la Cruz", "mj@example.es", "+34 600 000 000",
			strings.Repeat("¿Podemos hablar mañana? ", 400), "www.example.es"),
	}
}

// standIn is a service's endpoint: it checks a request as the service would and lists
// what it would refuse; the test answers 400 when the list is not empty.
type standIn struct {
	path   *regexp.Regexp // the URL path the service serves
	status int            // its answer to a good request
	check  func(ev event.Event, r *http.Request, body []byte) []string
}

var (
	hubspotPath    = regexp.MustCompile(`^/submissions/v3/integration/submit/\d+/[0-9a-f-]{36}$`)
	salesforcePath = regexp.MustCompile(`^/servlet/servlet\.WebToLead$`)
	pipedrivePath  = regexp.MustCompile(`^/v1/leads$`)
	zapierPath     = regexp.MustCompile(`^/hooks/catch/\d+/\w+/$`)
	sheetsPath     = regexp.MustCompile(`^/macros/s/[\w-]+/exec$`)
	teamsPath      = regexp.MustCompile(`^/workflows/\w+/triggers/manual/paths/invoke$`)
	orgID          = regexp.MustCompile(`^00D[0-9A-Za-z]{12}([0-9A-Za-z]{3})?$`)
)

// standIns holds one stand-in per recipe of docs/recipes.md.
var standIns = map[string]standIn{
	"hubspot":    {hubspotPath, http.StatusOK, checkHubSpot},
	"salesforce": {salesforcePath, http.StatusOK, checkSalesforce},
	"pipedrive":  {pipedrivePath, http.StatusCreated, checkPipedrive},
	"zapier":     {zapierPath, http.StatusOK, checkFlat("event_id", "email", "name", "phone", "content", "kind")},
	"sheets":     {sheetsPath, http.StatusOK, checkSheets},
	"teams":      {teamsPath, http.StatusAccepted, checkTeams},
}

func TestRecipes(t *testing.T) {
	blocks := recipeBlocks(t)
	var names []string
	for name := range blocks {
		names = append(names, name)
	}
	slices.Sort(names)
	var want []string
	for name := range standIns {
		want = append(want, name)
	}
	slices.Sort(want)
	require.Equal(t, want, names, "every recipe in docs/recipes.md has a stand-in here, and every stand-in a recipe")

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			fc := loadRecipe(t, blocks[name])
			si := standIns[name]
			var (
				mu       sync.Mutex
				problems []string
				got      int
			)
			var current event.Event
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				var p []string
				if r.Method != http.MethodPost {
					p = append(p, "method "+r.Method)
				}
				if !si.path.MatchString(r.URL.Path) {
					p = append(p, "path "+r.URL.Path)
				}
				p = append(p, si.check(current, r, body)...)
				mu.Lock()
				problems = append(problems, p...)
				got++
				mu.Unlock()
				if len(p) > 0 {
					http.Error(w, `{"status":"error"}`, http.StatusBadRequest)
					return
				}
				w.WriteHeader(si.status)
			}))
			t.Cleanup(srv.Close)

			wc := fc.WebhookConfig()
			u, err := url.Parse(wc.URL)
			require.NoError(t, err)
			target, _ := url.Parse(srv.URL)
			u.Scheme, u.Host = target.Scheme, target.Host // the service's path and query, on the stand-in
			wc.URL = u.String()
			f := newForwarder(t, wc)

			sent := 0
			for _, ev := range recipeLeads() {
				pass, err := fc.FilterAccepts(ev)
				require.NoError(t, err, "the filter runs on every sample")
				if !fc.Accepts(ev.Chatbot(), ev.Kind()) || !pass {
					continue
				}
				current = ev
				require.NoError(t, deliver(t, f, ev), "session %d: %v", ev.Data.SessionID, problems)
				sent++
			}
			assert.Empty(t, problems)
			assert.Equal(t, sent, got)
			assert.Positive(t, sent)
		})
	}
}

func contentType(r *http.Request, want string) []string {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
		return []string{"content type " + ct}
	}
	return nil
}

// strictJSON decodes body into v, refusing unknown fields and trailing data.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// checkHubSpot is the Forms API v3: fields of string values with known names, an email
// among them, and a context of strings.
func checkHubSpot(ev event.Event, r *http.Request, body []byte) []string {
	p := contentType(r, "application/json")
	var sub struct {
		Fields []struct {
			ObjectTypeID string `json:"objectTypeId"`
			Name         string `json:"name"`
			Value        string `json:"value"`
		} `json:"fields"`
		Context struct {
			PageURI  string `json:"pageUri"`
			PageName string `json:"pageName"`
		} `json:"context"`
	}
	if err := strictJSON(body, &sub); err != nil {
		return append(p, "body: "+err.Error())
	}
	if len(sub.Fields) == 0 {
		p = append(p, "fields: required")
	}
	values := map[string]string{}
	for _, f := range sub.Fields {
		if f.ObjectTypeID != "0-1" || !slices.Contains([]string{"email", "firstname", "lastname", "phone", "message"}, f.Name) {
			p = append(p, "field not on the form: "+f.ObjectTypeID+"/"+f.Name)
		}
		if f.Value == "" {
			p = append(p, "empty value for "+f.Name)
		}
		values[f.Name] = f.Value
	}
	if values["email"] != ev.Data.Email {
		p = append(p, "email does not carry the lead's")
	}
	if strings.TrimSpace(values["firstname"]+" "+values["lastname"]) != strings.Join(strings.Fields(ev.Data.Name), " ") {
		p = append(p, "firstname + lastname is not the lead's name")
	}
	return p
}

// checkSalesforce is Web-to-Lead: a UTF-8 form with a valid oid, a last name, known
// fields within the Lead fields' lengths.
func checkSalesforce(ev event.Event, r *http.Request, body []byte) []string {
	p := contentType(r, "application/x-www-form-urlencoded")
	if r.URL.Query().Get("encoding") != "UTF-8" {
		p = append(p, "encoding=UTF-8 missing from the query")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return append(p, "form: "+err.Error())
	}
	limits := map[string]int{"oid": 18, "first_name": 40, "last_name": 80, "email": 80, "phone": 40,
		"company": 255, "lead_source": 40, "description": 32000}
	for k, vs := range form {
		limit, ok := limits[k]
		switch {
		case !ok:
			p = append(p, "unknown field "+k)
		case len(vs) != 1:
			p = append(p, "repeated field "+k)
		case utf8.RuneCountInString(vs[0]) > limit:
			p = append(p, fmt.Sprintf("%s longer than %d", k, limit))
		}
	}
	if !orgID.MatchString(form.Get("oid")) {
		p = append(p, "oid is not an organization id")
	}
	if form.Get("last_name") == "" {
		p = append(p, "last_name: required")
	}
	if form.Get("email") != ev.Data.Email || form.Get("phone") != ev.Data.Phone {
		p = append(p, "email or phone does not carry the lead's")
	}
	if !strings.HasSuffix(form.Get("description"), ": "+ev.Data.Content) {
		p = append(p, "description does not carry the message")
	}
	return p
}

// checkPipedrive is POST /v1/leads: an API token, a title, an existing organization or
// person, and only fields the API knows.
func checkPipedrive(ev event.Event, r *http.Request, body []byte) []string {
	p := contentType(r, "application/json")
	if r.Header.Get("X-Api-Token") != recipeEnv["PIPEDRIVE_API_TOKEN"] {
		p = append(p, "401: x-api-token missing or wrong")
	}
	var lead struct {
		Title          string `json:"title"`
		PersonID       *int   `json:"person_id"`
		OrganizationID *int   `json:"organization_id"`
		OriginID       string `json:"origin_id"`
	}
	if err := strictJSON(body, &lead); err != nil {
		return append(p, "body: "+err.Error())
	}
	if lead.Title == "" || utf8.RuneCountInString(lead.Title) > 255 {
		p = append(p, "title: required, at most 255 characters")
	}
	if lead.PersonID == nil && lead.OrganizationID == nil {
		p = append(p, "person_id or organization_id: required")
	}
	if lead.OrganizationID != nil && *lead.OrganizationID != 42 {
		p = append(p, "organization_id: no such organization")
	}
	if lead.OriginID != ev.ID {
		p = append(p, "origin_id is not the event id")
	}
	for _, s := range []string{ev.Data.Name, ev.Data.Email, ev.Data.Phone} {
		if !strings.Contains(lead.Title, s) {
			p = append(p, "title does not name the person and how to reach them")
		}
	}
	return p
}

// checkFlat is a catch hook that maps flat fields: a JSON object of scalars holding at
// least the given fields.
func checkFlat(required ...string) func(event.Event, *http.Request, []byte) []string {
	return func(ev event.Event, r *http.Request, body []byte) []string {
		p := contentType(r, "application/json")
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			return append(p, "body: "+err.Error())
		}
		for k, v := range obj {
			switch v.(type) {
			case map[string]any, []any:
				p = append(p, "nested field "+k)
			}
		}
		for _, k := range required {
			if _, ok := obj[k]; !ok {
				p = append(p, "missing field "+k)
			}
		}
		if obj["event_id"] != nil && obj["event_id"] != ev.ID {
			p = append(p, "event_id is not the event's")
		}
		return p
	}
}

// checkSheets is the Apps Script of the recipe: the token in the query, and a flat JSON
// object with every column.
func checkSheets(ev event.Event, r *http.Request, body []byte) []string {
	p := checkFlat("id", "created_at", "kind", "chatbot", "name", "email", "phone", "message", "page")(ev, r, body)
	if r.URL.Query().Get("token") != recipeEnv["SHEETS_TOKEN"] {
		p = append(p, "token missing or wrong")
	}
	var row map[string]any
	if json.Unmarshal(body, &row) == nil && (row["id"] != ev.ID || row["message"] != ev.Data.Content) {
		p = append(p, "id or message does not carry the event's")
	}
	return p
}

// checkTeams is a Workflows webhook: a message with one Adaptive Card whose text
// elements are non-empty, and no Markdown link made of what a lead wrote.
func checkTeams(ev event.Event, r *http.Request, body []byte) []string {
	p := contentType(r, "application/json")
	type element struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Size     string `json:"size"`
		Weight   string `json:"weight"`
		Wrap     bool   `json:"wrap"`
		IsSubtle bool   `json:"isSubtle"`
		Facts    []struct {
			Title string `json:"title"`
			Value string `json:"value"`
		} `json:"facts"`
	}
	var msg struct {
		Type        string `json:"type"`
		Attachments []struct {
			ContentType string  `json:"contentType"`
			ContentURL  *string `json:"contentUrl"`
			Content     struct {
				Schema  string    `json:"$schema"`
				Type    string    `json:"type"`
				Version string    `json:"version"`
				Body    []element `json:"body"`
			} `json:"content"`
		} `json:"attachments"`
	}
	if err := strictJSON(body, &msg); err != nil {
		return append(p, "body: "+err.Error())
	}
	if msg.Type != "message" || len(msg.Attachments) != 1 {
		return append(p, "not a message with one attachment")
	}
	card := msg.Attachments[0]
	if card.ContentType != "application/vnd.microsoft.card.adaptive" || card.Content.Type != "AdaptiveCard" ||
		!strings.HasPrefix(card.Content.Version, "1.") || len(card.Content.Body) == 0 {
		p = append(p, "not an Adaptive Card with a body")
	}
	var text strings.Builder
	for _, el := range card.Content.Body {
		switch el.Type {
		case "TextBlock":
			if el.Text == "" {
				p = append(p, "empty TextBlock")
			}
			text.WriteString(el.Text + "\n")
		case "FactSet":
			for _, f := range el.Facts {
				if f.Title == "" || f.Value == "" {
					p = append(p, "empty fact")
				}
				text.WriteString(f.Value + "\n")
			}
		default:
			p = append(p, "unknown element "+el.Type)
		}
	}
	if strings.Contains(text.String(), "](") {
		p = append(p, "a Markdown link made of the lead's text")
	}
	if !strings.Contains(text.String(), ev.Data.Email) {
		p = append(p, "the card does not show the email")
	}
	return p
}
