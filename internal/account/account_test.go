package account

import (
	"strings"
	"testing"
)

func TestValidators(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  error
		ok   bool
	}{
		{"slug ok", ValidateSlug("f", "acme-1"), true},
		{"slug one char", ValidateSlug("f", "a"), true},
		{"slug upper", ValidateSlug("f", "Acme"), false},
		{"slug trailing hyphen", ValidateSlug("f", "acme-"), false},
		{"slug 64", ValidateSlug("f", strings.Repeat("a", 64)), false},
		{"user email", ValidateUserName("f", "alice@example.com"), true},
		{"user unicode", ValidateUserName("f", "Zoë Ölçü"), true},
		{"user 256 bytes", ValidateUserName("f", strings.Repeat("a", 256)), true},
		{"user 257 bytes", ValidateUserName("f", strings.Repeat("a", 257)), false},
		{"user invalid utf8", ValidateUserName("f", "a\xffb"), false},
		{"user control", ValidateUserName("f", "a\x7fb"), false},
		{"user spaces", ValidateUserName("f", " a"), false},
		{"name ok", ValidateName("f", "Contoso VPN", 100), true},
		{"name blank", ValidateName("f", "  ", 100), false},
		{"name long", ValidateName("f", strings.Repeat("é", 101), 100), false},
		{"name 100 runes", ValidateName("f", strings.Repeat("é", 100), 100), true},
		{"matching", ValidateNumberMatching("f", "when_supported"), true},
		{"matching bad", ValidateNumberMatching("f", "on"), false},
		{"hook https", ValidateWebhookURL("f", "https://rp.example:8443/hook?x=1", false), true},
		{"hook http", ValidateWebhookURL("f", "http://rp.example/hook", false), false},
		{"hook http loopback allowed", ValidateWebhookURL("f", "http://127.0.0.1:9/hook", true), true},
		{"hook http localhost allowed", ValidateWebhookURL("f", "http://localhost/hook", true), true},
		{"hook http remote never", ValidateWebhookURL("f", "http://rp.example/hook", true), false},
		{"hook http loopback not allowed", ValidateWebhookURL("f", "http://127.0.0.1/hook", false), false},
		{"hook userinfo", ValidateWebhookURL("f", "https://u:p@rp.example/", false), false},
		{"hook opaque", ValidateWebhookURL("f", "https:rp.example", false), false},
		{"hook no host", ValidateWebhookURL("f", "https:///x", false), false},
	}
	for _, tc := range cases {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, tc.err)
		}
	}
}
