module ksiam.local/peers/golang-jwt

go 1.24.0

require github.com/golang-jwt/jwt/v4 v4.5.2
