module kubetrust.test/verifier

go 1.19
