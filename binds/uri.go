package binds

// PLACEHOLDER: the binds agent replaces this file with the real parser.

// URI is a parsed SQLAlchemy-style database URL:
// dialect[+driver]://user:password@host:port/database?options.
type URI struct {
	Dialect  string
	Driver   string
	User     string
	Password Secret
	Host     string
	Port     int
	Database string
	Query    map[string][]string
}

// Secret is a password: it prints as "***" everywhere.
type Secret string

// String renders the URI with the password as ***.
func (u URI) String() string { return u.Dialect + "://" }
