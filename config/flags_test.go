package config

import (
	"slices"
	"testing"
)

func TestSecretFlags(t *testing.T) {
	tests := []struct {
		name  string
		flags map[string]string
		want  []string
	}{
		{"none", nil, nil},
		{"database URI without password", map[string]string{"DATABASE_URI": "postgresql://app@db/app"}, nil},
		{"database URI with password", map[string]string{"DATABASE_URI": "postgresql://app:Hunter22@db/app"}, []string{"--database-uri"}},
		{"database URI with password parameter", map[string]string{"DATABASE_URI": "mysql://app@db/app?password=Hunter22"}, []string{"--database-uri"}},
		{"binds as URIs", map[string]string{"BINDS": `{"a":"postgresql://app@db/a","b":"mysql://root:Hunter22@db2/b"}`}, []string{"--binds"}},
		{"binds as tables", map[string]string{"BINDS": `{"a":{"uri":"postgresql://app:Hunter22@db/a","slot":"s:x"}}`}, []string{"--binds"}},
		{"binds without passwords", map[string]string{"BINDS": `{"a":{"uri":"postgresql://app@db/a","slot":"s:x"},"b":"mysql://r@h:3306/d"}`}, nil},
		{"binds not JSON", map[string]string{"BINDS": `{a: postgresql://app:Hunter22@db/a`}, []string{"--binds"}},
		{"NATS URLs without user", map[string]string{"NATS_URL": "nats://a:4222,nats://b:4222"}, nil},
		{"NATS URL with password", map[string]string{"NATS_URL": "nats://a:4222,nats://u:Hunter22@b:4222"}, []string{"--nats-url"}},
		{"NATS URL with token", map[string]string{"NATS_URL": "nats://Hunter22@b:4222"}, []string{"--nats-url"}},
		{"NATS password and token, in key order", map[string]string{"NATS_TOKEN": "t", "NATS_PASSWORD": "p", "NATS_USER": "u"}, []string{"--nats-password", "--nats-token"}},
		{"empty password", map[string]string{"NATS_PASSWORD": ""}, nil},
		{"public keys", map[string]string{"NATS_USER": "u", "HTTP_ADDR": "h:1", "DATA_DIR": "/a:b@c"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SecretFlags(tc.flags); !slices.Equal(got, tc.want) {
				t.Fatalf("SecretFlags = %q, want %q", got, tc.want)
			}
		})
	}
}
