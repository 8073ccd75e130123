// A streaming chat-completions client on Go's net/http and crypto/tls, for
// the test that llmtap captures Go programs through (*tls.Conn).Write/Read.
//
//	go build -o go_stream ./tests/clients/go_stream
//	SSL_CERT_FILE=ca.pem go_stream https://127.0.0.1:PORT MODEL REPORT.json
//
// Writes REPORT.json: when the first content chunk arrived (wall clock, ns)
// and the usage the server reported.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

type chunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
		PromptTokens     int `json:"prompt_tokens"`
	} `json:"usage"`
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go_stream BASE_URL MODEL REPORT")
		os.Exit(2)
	}
	body := fmt.Sprintf(`{"model":%q,"stream":true,"stream_options":{"include_usage":true},`+
		`"messages":[{"role":"user","content":"hi"}]}`, os.Args[2])
	resp, err := http.Post(os.Args[1]+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	report := map[string]interface{}{"status": resp.StatusCode}
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Text()
		data := strings.TrimPrefix(line, "data: ")
		if data == line || data == "[DONE]" {
			continue
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" && report["first_token_ns"] == nil {
			report["first_token_ns"] = time.Now().UnixNano()
		}
		if c.Usage != nil {
			report["output_tokens"] = c.Usage.CompletionTokens
			report["input_tokens"] = c.Usage.PromptTokens
		}
	}
	out, _ := json.Marshal(report)
	if err := os.WriteFile(os.Args[3], out, 0o644); err != nil || resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, "status", resp.StatusCode, err)
		os.Exit(1)
	}
}
