#include "proto/token_shares.h"

#include <algorithm>

namespace memaudit {

void SetTokenShares(v1::TokenAttribution& attribution) {
  double positive = 0;
  for (const v1::TokenAttribution::Token& token : attribution.tokens()) {
    positive += std::max(token.score(), 0.0);
  }
  for (v1::TokenAttribution::Token& token : *attribution.mutable_tokens()) {
    token.set_share(positive > 0 ? std::max(token.score(), 0.0) / positive : 0.0);
  }
}

}  // namespace memaudit
