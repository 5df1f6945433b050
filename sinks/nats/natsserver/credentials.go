package natsserver

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/trackerd/trackerd/tracker"
)

// CredentialsFile is the name of the file, in DATA_DIR next to nats.url,
// that keeps the embedded server's user and password.
const CredentialsFile = "nats.auth"

// credentialsUser is the user name trackerd generates.
const credentialsUser = "trackerd"

// Credentials are the user name and password every client of the embedded
// server gives. The password is a secret: never log it.
type Credentials struct {
	User     string
	Password string
}

// credentialsHeader opens a credentials file. The file is also a shell
// fragment setting NATS_USER and NATS_PASSWORD, which the nats CLI reads.
const credentialsHeader = `# The user and password of trackerd's embedded NATS server, made on its
# first start and used on every later one. Keep this file mode 0600; delete
# it to get a new password at the next start of trackerd run.
# For the nats CLI: set -a; . ./nats.auth; set +a; nats -s "$(cat nats.url)" stream ls
`

// LoadOrCreateCredentials returns the credentials kept in file. When file
// does not exist, it generates a user and a random password (128 bits) and
// writes them there with mode 0600, creating the directory with mode 0700,
// so that later starts use the same credentials. When file is readable or
// writable by other users, it makes it 0600 and logs a warning (its
// password may be known: delete it for a new one).
func LoadOrCreateCredentials(file string, log *slog.Logger) (Credentials, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := ReadCredentials(file)
	if err == nil {
		st, err := os.Stat(file)
		if err == nil && st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(file, 0o600); err != nil {
				return Credentials{}, fmt.Errorf("nats: %s is readable by other users (mode %04o) and cannot be made 0600: %w", file, st.Mode().Perm(), err)
			}
			log.Warn("the embedded NATS server's credentials file was open to other users: made it 0600; delete it for a new password if others may have read it",
				slog.String("file", file), slog.String("was", fmt.Sprintf("%04o", st.Mode().Perm())))
		}
		return c, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Credentials{}, tracker.ConfigError(err)
	}
	c = Credentials{User: credentialsUser, Password: rand.Text()}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return Credentials{}, configErr(fmt.Sprintf("nats: the embedded server's credentials: %v (set DATA_DIR to a directory trackerd may write)", err))
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReadCredentials(file) // another trackerd was quicker
	}
	if err != nil {
		return Credentials{}, configErr(fmt.Sprintf("nats: the embedded server's credentials: %v (set DATA_DIR to a directory trackerd may write)", err))
	}
	_, err = fmt.Fprintf(f, "%sNATS_USER=%s\nNATS_PASSWORD=%s\n", credentialsHeader, c.User, c.Password)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return Credentials{}, fmt.Errorf("nats: writing the embedded server's credentials %s: %w", file, err)
	}
	log.Info("generated the embedded NATS server's credentials", slog.String("file", file))
	return c, nil
}

// ReadCredentials reads a credentials file written by
// LoadOrCreateCredentials: NATS_USER=... and NATS_PASSWORD=... lines. An
// error matches fs.ErrNotExist when the file does not exist; it never shows
// the file's content.
func ReadCredentials(file string) (Credentials, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Credentials{}, err
	}
	var c Credentials
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		switch {
		case !ok:
			return Credentials{}, fmt.Errorf("nats: %s, line %d: want NATS_USER=... or NATS_PASSWORD=... (delete the file for new credentials)", file, n)
		case k == "NATS_USER":
			c.User = v
		case k == "NATS_PASSWORD":
			c.Password = v
		}
	}
	if c.User == "" || c.Password == "" {
		return Credentials{}, fmt.Errorf("nats: %s lacks NATS_USER or NATS_PASSWORD (delete the file for new credentials)", file)
	}
	return c, nil
}
