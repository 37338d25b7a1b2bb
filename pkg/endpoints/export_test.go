package endpoints

// NewTestKV is newSyncKV for the package's external tests: an endpoints
// bucket on a server of the test's own.
var NewTestKV = newSyncKV
