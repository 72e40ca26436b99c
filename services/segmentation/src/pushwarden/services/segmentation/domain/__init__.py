"""The segmentation domain: typed values, profiles, events, rule trees and lists as plain
values, checked and converted from and to the contract's messages."""
