// Package designdoc holds no code: its test checks that DESIGN.md names
// only what exists (the files of its File map, the functions of its "Life
// of a record"), so that the map does not drift from the code it describes.
package designdoc
